-- Upload sessions (resumable streaming uploads and presigned-URL uploads), the parts S3
-- acknowledged for each, and per-file access grants.
CREATE TABLE files.upload_sessions (
    id              text PRIMARY KEY,
    owner_id        text NOT NULL,
    file_id         text NOT NULL,           -- the file it becomes (new file or parent)
    parent_file_id  text,                    -- set when the upload is a new version
    job_id          text,
    display_name    text NOT NULL,
    content_type    text NOT NULL,
    declared_size   bigint NOT NULL DEFAULT 0 CHECK (declared_size >= 0),
    client_sha256   text NOT NULL DEFAULT '',
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb,
    kind            text NOT NULL DEFAULT 'file' CHECK (kind IN ('file', 'video')),
    via             text NOT NULL DEFAULT 'stream' CHECK (via IN ('stream', 'url')),
    bucket          text NOT NULL,
    object_key      text NOT NULL,
    s3_upload_id    text,                    -- the S3 multipart upload, once started
    part_size       bigint NOT NULL CHECK (part_size > 0),
    committed_bytes bigint NOT NULL DEFAULT 0 CHECK (committed_bytes >= 0),
    state           text NOT NULL DEFAULT 'active'
                    CHECK (state IN ('active', 'completed', 'cancelled', 'failed', 'expired')),
    stream_token    text,                    -- the stream currently writing (latest wins)
    error           text NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX upload_sessions_idle_idx ON files.upload_sessions (update_time) WHERE state = 'active';
CREATE INDEX upload_sessions_s3_idx ON files.upload_sessions (s3_upload_id) WHERE s3_upload_id IS NOT NULL;

CREATE TABLE files.upload_parts (
    upload_id       text NOT NULL REFERENCES files.upload_sessions (id) ON DELETE CASCADE,
    part_number     integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    etag            text NOT NULL,
    size_bytes      bigint NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);

-- Access grants live here (not in the users service): the files service checks them on
-- every call without a network hop, and they disappear with the file.
CREATE TABLE files.file_shares (
    file_id         text NOT NULL REFERENCES files.files (id) ON DELETE CASCADE,
    user_id         text NOT NULL,
    role            text NOT NULL CHECK (role IN ('reader', 'writer')),
    create_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, user_id)
);

CREATE INDEX file_shares_user_idx ON files.file_shares (user_id);
CREATE INDEX file_versions_file_idx ON files.file_versions (file_id, create_time DESC);
