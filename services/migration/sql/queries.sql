-- SQL of the legacy importers (services/migration): only their own progress tables.

-- name: upsert_run
INSERT INTO files.legacy_import_runs (id, source, owner_override, state)
VALUES ($1, $2, $3, 'running')
ON CONFLICT (id) DO UPDATE SET state = 'running', update_time = now()
RETURNING *;

-- name: get_run
SELECT * FROM files.legacy_import_runs WHERE id = $1;

-- name: set_run_state
UPDATE files.legacy_import_runs SET state = $2, update_time = now() WHERE id = $1 RETURNING id;

-- name: get_file_progress
SELECT * FROM files.legacy_import_files WHERE run_id = $1 AND source_path = $2;

-- name: start_file
INSERT INTO files.legacy_import_files
    (run_id, source_path, size_bytes, mtime_ns, sha256, state, owner_id, display_name, attempts)
VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, 1)
ON CONFLICT (run_id, source_path) DO UPDATE SET
    size_bytes = EXCLUDED.size_bytes,
    mtime_ns = EXCLUDED.mtime_ns,
    sha256 = EXCLUDED.sha256,
    state = 'pending',
    owner_id = EXCLUDED.owner_id,
    display_name = EXCLUDED.display_name,
    error = '',
    attempts = files.legacy_import_files.attempts + 1,
    update_time = now()
RETURNING *;

-- name: set_file_upload
UPDATE files.legacy_import_files SET upload_id = $3, update_time = now()
WHERE run_id = $1 AND source_path = $2;

-- name: file_done
UPDATE files.legacy_import_files
SET state = 'done', file_id = $3, version_id = $4, sha256 = $5, error = '', update_time = now()
WHERE run_id = $1 AND source_path = $2;

-- name: file_failed
UPDATE files.legacy_import_files SET state = 'failed', error = $3, update_time = now()
WHERE run_id = $1 AND source_path = $2;

-- name: record_failure
-- A file that failed before it could be started (unreadable, bad name): still one row.
INSERT INTO files.legacy_import_files
    (run_id, source_path, size_bytes, mtime_ns, state, owner_id, display_name, error, attempts)
VALUES ($1, $2, $3, $4, 'failed', $5, $6, $7, 1)
ON CONFLICT (run_id, source_path) DO UPDATE SET
    state = 'failed', error = EXCLUDED.error,
    attempts = files.legacy_import_files.attempts + 1, update_time = now();

-- name: run_files
SELECT * FROM files.legacy_import_files WHERE run_id = $1 ORDER BY source_path;

-- name: delete_run_files
DELETE FROM files.legacy_import_files WHERE run_id = $1;

-- name: file_owned_by_other_run
-- Whether a files.files row is recorded by a run other than $1 (never rolled back with $1).
SELECT EXISTS (
    SELECT 1 FROM files.legacy_import_files WHERE file_id = $2 AND run_id <> $1
);

-- name: get_user_mappings
SELECT * FROM users.legacy_user_map WHERE legacy_id = ANY($1::text[]);

-- name: claim_user_mapping
INSERT INTO users.legacy_user_map (legacy_id, email, state, needs_password_reset, legacy_create_time)
VALUES ($1, $2, 'pending', $3, $4)
ON CONFLICT (legacy_id) DO UPDATE SET
    email = EXCLUDED.email,
    needs_password_reset = EXCLUDED.needs_password_reset,
    legacy_create_time = EXCLUDED.legacy_create_time
WHERE users.legacy_user_map.state = 'pending'
RETURNING *;

-- name: finish_user_mapping
UPDATE users.legacy_user_map SET user_id = $2, state = 'done', import_time = now()
WHERE legacy_id = $1;

-- name: drop_user_mapping
DELETE FROM users.legacy_user_map WHERE legacy_id = $1 AND state = 'pending';

-- name: user_ids_of_legacy
SELECT legacy_id, user_id FROM users.legacy_user_map
WHERE legacy_id = ANY($1::text[]) AND state = 'done';

-- name: insert_job_mappings
INSERT INTO jobs.legacy_job_map (legacy_id, job_id, legacy_state, legacy_create_time)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[])
ON CONFLICT (legacy_id) DO NOTHING;

-- name: get_job_mappings
SELECT * FROM jobs.legacy_job_map WHERE legacy_id = ANY($1::text[]);

-- name: upsert_reject
INSERT INTO users.legacy_rejects (source, key, kind, reason, detail)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (source, key) DO UPDATE SET
    kind = EXCLUDED.kind, reason = EXCLUDED.reason, detail = EXCLUDED.detail, update_time = now();

-- name: delete_rejects
DELETE FROM users.legacy_rejects WHERE source = $1 AND key = ANY($2::text[]);

-- name: list_rejects
SELECT * FROM users.legacy_rejects WHERE source = $1 ORDER BY key;

-- name: get_checkpoint
SELECT * FROM users.legacy_checkpoints WHERE source = $1 AND phase = $2;

-- name: save_checkpoint
INSERT INTO users.legacy_checkpoints (source, phase, cursor, done, records)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (source, phase) DO UPDATE SET
    cursor = EXCLUDED.cursor, done = EXCLUDED.done,
    records = users.legacy_checkpoints.records + EXCLUDED.records, update_time = now();

-- name: reset_checkpoints
DELETE FROM users.legacy_checkpoints WHERE source = $1;
