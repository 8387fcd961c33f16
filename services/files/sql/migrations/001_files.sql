-- Files and upload sessions. Object keys are built from ids only:
-- users/{owner_id}/[jobs/{job_id}/]{file_id}/content
CREATE TABLE files.files (
    id              text PRIMARY KEY,
    owner_id        text NOT NULL,
    job_id          text,
    display_name    text NOT NULL,
    content_type    text NOT NULL,
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    sha256          text NOT NULL,
    bucket          text NOT NULL,
    object_key      text NOT NULL,
    version_id      text NOT NULL,
    etag            text NOT NULL,
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb,
    kind            text NOT NULL DEFAULT 'file' CHECK (kind IN ('file', 'video')),
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    delete_time     timestamptz
);

CREATE INDEX files_owner_idx ON files.files (owner_id, create_time DESC, id) WHERE delete_time IS NULL;
CREATE INDEX files_job_idx ON files.files (job_id) WHERE job_id IS NOT NULL;

-- Every committed version of a file (the current one included).
CREATE TABLE files.file_versions (
    file_id         text NOT NULL REFERENCES files.files (id) ON DELETE CASCADE,
    version_id      text NOT NULL,
    size_bytes      bigint NOT NULL,
    sha256          text NOT NULL,
    etag            text NOT NULL,
    content_type    text NOT NULL,
    create_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, version_id)
);
