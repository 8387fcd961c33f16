-- Legacy job id -> jobs.jobs id, written by `mediagrid legacy import-redis` (services/legacy).
-- The job itself is created with request_id 'legacy:{legacy id}', which makes the insert
-- idempotent; this map is for lookups and reports.
CREATE TABLE jobs.legacy_job_map (
    legacy_id       text PRIMARY KEY,
    job_id          uuid,                         -- NULL: not imported (finished legacy job)
    legacy_state    text NOT NULL,
    legacy_create_time timestamptz,               -- the legacy created_at (the job's own is the import time)
    import_time     timestamptz NOT NULL DEFAULT now()
);
