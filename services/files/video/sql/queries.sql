-- Queries of the video part of the files service (services/files/video/repository.py).
-- Access decisions are the FileService's (services/files/access.py).

-- name: get_video
SELECT f.id AS file_id, f.owner_id, f.job_id, f.display_name, f.content_type, f.size_bytes,
       f.bucket, f.object_key, f.version_id,
       v.probe_state, v.probe_job, v.probe_error, v.probe_update_time,
       v.duration_seconds, v.container, v.video_codec, v.audio_codec, v.width, v.height,
       v.frame_rate, v.bit_rate, v.rotation_degrees,
       v.thumbnail_state, v.thumbnail_job, v.thumbnail_error, v.thumbnail_update_time,
       v.create_time, v.update_time
FROM files.videos v
JOIN files.files f ON f.id = v.file_id
WHERE v.file_id = $1 AND f.delete_time IS NULL;

-- name: list_videos
-- Keyset pagination on (videos.create_time, file_id) descending; $2/$3 NULL = first page.
SELECT f.id AS file_id, f.owner_id, f.job_id, f.display_name, f.content_type, f.size_bytes,
       f.bucket, f.object_key, f.version_id,
       v.probe_state, v.probe_job, v.probe_error, v.probe_update_time,
       v.duration_seconds, v.container, v.video_codec, v.audio_codec, v.width, v.height,
       v.frame_rate, v.bit_rate, v.rotation_degrees,
       v.thumbnail_state, v.thumbnail_job, v.thumbnail_error, v.thumbnail_update_time,
       v.create_time, v.update_time
FROM files.videos v
JOIN files.files f ON f.id = v.file_id
WHERE f.owner_id = $1
  AND f.delete_time IS NULL
  AND ($2::timestamptz IS NULL OR (v.create_time, v.file_id) < ($2::timestamptz, $3::text))
ORDER BY v.create_time DESC, v.file_id DESC
LIMIT $4;

-- name: list_thumbnails
SELECT file_id, index, time_seconds, bucket, object_key, version_id, width, height, size_bytes
FROM files.video_thumbnails
WHERE file_id = ANY($1::text[])
ORDER BY file_id, index;

-- name: register_video
-- A new video, or a new version of one: every step starts over.
INSERT INTO files.videos (file_id)
VALUES ($1)
ON CONFLICT (file_id) DO UPDATE SET
    probe_state = 'pending', probe_job = NULL, probe_error = NULL, probe_update_time = now(),
    duration_seconds = NULL, container = NULL, video_codec = NULL, audio_codec = NULL,
    width = NULL, height = NULL, frame_rate = NULL, bit_rate = NULL, rotation_degrees = NULL,
    thumbnail_state = 'pending', thumbnail_job = NULL, thumbnail_error = NULL,
    thumbnail_update_time = now(), update_time = now();

-- name: set_probe_job
-- Only fills the job in: a fast worker may already have recorded its outcome (and its job).
UPDATE files.videos SET probe_job = $2
WHERE file_id = $1 AND probe_job IS NULL;

-- name: restart_thumbnails
UPDATE files.videos
SET thumbnail_state = 'pending', thumbnail_job = NULL, thumbnail_error = NULL,
    thumbnail_update_time = now(), update_time = now()
WHERE file_id = $1;

-- name: set_thumbnail_job
UPDATE files.videos SET thumbnail_job = $2
WHERE file_id = $1 AND thumbnail_job IS NULL;

-- name: record_probe_success
-- Accepted from the current probe job only (or any job while none is recorded yet).
UPDATE files.videos
SET probe_state = 'succeeded', probe_job = $2, probe_error = NULL, probe_update_time = now(),
    duration_seconds = $3, container = $4, video_codec = $5, audio_codec = $6,
    width = $7, height = $8, frame_rate = $9, bit_rate = $10, rotation_degrees = $11,
    update_time = now()
WHERE file_id = $1 AND (probe_job IS NULL OR probe_job = $2);

-- name: record_probe_failure
UPDATE files.videos
SET probe_state = 'failed', probe_job = $2, probe_error = $3, probe_update_time = now(),
    update_time = now()
WHERE file_id = $1 AND (probe_job IS NULL OR probe_job = $2);

-- name: record_thumbnails_state
UPDATE files.videos
SET thumbnail_state = $3, thumbnail_job = $2, thumbnail_error = $4,
    thumbnail_update_time = now(), update_time = now()
WHERE file_id = $1 AND (thumbnail_job IS NULL OR thumbnail_job = $2);

-- name: delete_thumbnails
DELETE FROM files.video_thumbnails WHERE file_id = $1;

-- name: insert_thumbnails
INSERT INTO files.video_thumbnails
    (file_id, index, time_seconds, bucket, object_key, version_id, width, height, size_bytes)
SELECT $1, t.index, t.time_seconds, t.bucket, t.object_key, t.version_id, t.width, t.height,
       t.size_bytes
FROM unnest($2::integer[], $3::double precision[], $4::text[], $5::text[], $6::text[],
            $7::integer[], $8::integer[], $9::bigint[])
     AS t(index, time_seconds, bucket, object_key, version_id, width, height, size_bytes);

-- name: fail_unscheduled_steps
-- Steps still PENDING without a job: their job could not be enqueued.
UPDATE files.videos
SET probe_state = CASE WHEN probe_state = 'pending' AND probe_job IS NULL
                       THEN 'failed' ELSE probe_state END,
    probe_error = CASE WHEN probe_state = 'pending' AND probe_job IS NULL
                       THEN $2 ELSE probe_error END,
    thumbnail_state = CASE WHEN thumbnail_state = 'pending' AND thumbnail_job IS NULL
                           THEN 'failed' ELSE thumbnail_state END,
    thumbnail_error = CASE WHEN thumbnail_state = 'pending' AND thumbnail_job IS NULL
                           THEN $2 ELSE thumbnail_error END,
    update_time = now()
WHERE file_id = $1;
