-- Grants the grant table (services/users/grants.py, docs/users.md) does not allow. They gave
-- nothing since the table exists (it filters what a principal holds); this removes them.
-- Kept: files.* and jobs.read/jobs.cancel grants inside their own collection, and the
-- jobs.create:job-types/{type} entries of service users made by the services' bootstrap.
DELETE FROM users.grants g
WHERE NOT (
    (g.permission IN ('files.read', 'files.write', 'files.delete', 'files.share')
        AND g.resource ~ '^files/.+')
    OR (g.permission IN ('jobs.read', 'jobs.cancel')
        AND g.resource ~ '^(jobs|batches)/.+')
    OR (g.permission = 'jobs.create'
        AND g.resource ~ '^job-types/[^*]+$'
        AND EXISTS (SELECT 1 FROM users.users u WHERE u.id = g.user_id AND u.role = 'service'))
);
