-- The files service's SQL; loaded once by services/files/repository.py.

-- name: insert_upload
INSERT INTO files.upload_sessions (
    id, owner_id, file_id, parent_file_id, job_id, display_name, content_type, declared_size,
    client_sha256, labels, kind, via, bucket, object_key, part_size, stream_token)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
RETURNING *;

-- name: get_upload
SELECT * FROM files.upload_sessions WHERE id = $1;

-- name: claim_upload
-- A new stream takes over an active session at the offset it names (the latest stream wins).
UPDATE files.upload_sessions SET stream_token = $2, update_time = now()
WHERE id = $1 AND state = 'active' AND committed_bytes = $3
RETURNING *;

-- name: set_s3_upload_id
UPDATE files.upload_sessions SET s3_upload_id = $3, update_time = now()
WHERE id = $1 AND stream_token = $2 AND state = 'active'
RETURNING id;

-- name: record_part
WITH session AS (
    UPDATE files.upload_sessions
    SET committed_bytes = greatest(committed_bytes, $5), update_time = now()
    WHERE id = $1 AND stream_token = $6 AND state = 'active'
    RETURNING id
)
INSERT INTO files.upload_parts (upload_id, part_number, etag, size_bytes)
SELECT session.id, $2, $3, $4 FROM session
ON CONFLICT (upload_id, part_number) DO UPDATE SET etag = excluded.etag, size_bytes = excluded.size_bytes
RETURNING part_number;

-- name: advance_committed
UPDATE files.upload_sessions
SET committed_bytes = greatest(committed_bytes, $3), update_time = now()
WHERE id = $1 AND stream_token = $2 AND state = 'active'
RETURNING id;

-- name: list_parts
SELECT part_number, etag, size_bytes FROM files.upload_parts
WHERE upload_id = $1 ORDER BY part_number;

-- name: finish_upload
-- Moves an active session to a final state; returns nothing when it was not active.
UPDATE files.upload_sessions SET state = $2, error = $3, stream_token = NULL, update_time = now()
WHERE id = $1 AND state = 'active'
RETURNING *;

-- name: complete_upload
-- Closes an active session as completed: every byte of the file counts as committed.
UPDATE files.upload_sessions
SET state = 'completed', error = '', stream_token = NULL, committed_bytes = $2, update_time = now()
WHERE id = $1 AND state = 'active'
RETURNING *;

-- name: idle_uploads
SELECT * FROM files.upload_sessions
WHERE state = 'active' AND update_time < $1
ORDER BY update_time LIMIT $2;

-- name: known_s3_uploads
SELECT s3_upload_id FROM files.upload_sessions
WHERE state = 'active' AND s3_upload_id = any($1::text[]);

-- name: insert_file
INSERT INTO files.files (
    id, owner_id, job_id, display_name, content_type, size_bytes, sha256, bucket, object_key,
    version_id, etag, labels, kind)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING *;

-- name: set_current_version
UPDATE files.files
SET version_id = $2, etag = $3, size_bytes = $4, sha256 = $5, content_type = $6,
    delete_time = NULL, update_time = now()
WHERE id = $1
RETURNING *;

-- name: insert_version
INSERT INTO files.file_versions (file_id, version_id, size_bytes, sha256, etag, content_type)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (file_id, version_id) DO NOTHING;

-- name: get_file
SELECT * FROM files.files WHERE id = $1;

-- name: get_share_role
SELECT role FROM files.file_shares WHERE file_id = $1 AND user_id = $2;

-- name: list_files
SELECT * FROM files.files
WHERE owner_id = $1
  AND ($2::text IS NULL OR job_id = $2)
  AND ($3::text = '' OR starts_with(content_type, $3))
  AND ($4 OR delete_time IS NULL)
  AND ($5::timestamptz IS NULL OR (create_time, id) < ($5, $6::text))
ORDER BY create_time DESC, id DESC
LIMIT $7;

-- name: update_file
UPDATE files.files SET display_name = $2, labels = $3, update_time = now()
WHERE id = $1
RETURNING *;

-- name: soft_delete_file
UPDATE files.files SET delete_time = now(), update_time = now()
WHERE id = $1 AND delete_time IS NULL
RETURNING *;

-- name: purge_file
DELETE FROM files.files WHERE id = $1 RETURNING id;

-- name: list_versions
SELECT * FROM files.file_versions
WHERE file_id = $1
  AND ($2::timestamptz IS NULL OR (create_time, version_id) < ($2, $3::text))
ORDER BY create_time DESC, version_id DESC
LIMIT $4;

-- name: get_version
SELECT * FROM files.file_versions WHERE file_id = $1 AND version_id = $2;

-- name: version_ids
SELECT version_id FROM files.file_versions WHERE file_id = $1;

-- name: upsert_share
INSERT INTO files.file_shares (file_id, user_id, role) VALUES ($1, $2, $3)
ON CONFLICT (file_id, user_id) DO UPDATE SET role = excluded.role, create_time = now()
RETURNING *;

-- name: delete_share
DELETE FROM files.file_shares WHERE file_id = $1 AND user_id = $2 RETURNING file_id;

-- name: list_shares
SELECT * FROM files.file_shares WHERE file_id = $1 ORDER BY user_id;

-- name: usage
SELECT count(*) AS file_count, coalesce(sum(size_bytes), 0)::bigint AS total_bytes
FROM files.files WHERE owner_id = $1 AND delete_time IS NULL;

-- name: user_files
SELECT * FROM files.files WHERE owner_id = $1 ORDER BY id;

-- name: purge_user_files
-- Every file row of a user (their objects are deleted first); returns how many.
WITH del AS (DELETE FROM files.files WHERE owner_id = $1 RETURNING id)
SELECT count(*) FROM del;

-- name: active_uploads_of_user
SELECT * FROM files.upload_sessions WHERE owner_id = $1 AND state = 'active';

-- name: recent_objects
-- The S3 object of the newest live files (what `mediagrid check` looks for), and the count.
SELECT id, bucket, object_key, version_id, count(*) OVER () AS total
FROM files.files WHERE delete_time IS NULL
ORDER BY create_time DESC, id LIMIT $1;
