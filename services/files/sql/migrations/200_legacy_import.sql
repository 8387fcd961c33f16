-- Progress of `mediagrid legacy import-files` (owned by services/legacy): one row per run and
-- one per source file of a run, so that a run resumes and can be rolled back.
CREATE TABLE files.legacy_import_runs (
    id              text PRIMARY KEY,            -- the run name (--run)
    source          text NOT NULL,               -- the absolute source directory
    owner_override  text,                        -- users/{id} given with --owner, if any
    state           text NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'completed', 'failed', 'rolled_back')),
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE files.legacy_import_files (
    run_id          text NOT NULL REFERENCES files.legacy_import_runs (id) ON DELETE CASCADE,
    source_path     text NOT NULL,               -- relative to the run's source directory
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    mtime_ns        bigint NOT NULL,
    sha256          text NOT NULL DEFAULT '',    -- of the local file, as read for the import
    state           text NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    owner_id        text NOT NULL DEFAULT '',
    display_name    text NOT NULL DEFAULT '',    -- the file's name in mediagrid
    file_id         text,                        -- files.files row this run created
    version_id      text,
    upload_id       text,                        -- the upload session of the last attempt
    error           text NOT NULL DEFAULT '',
    attempts        integer NOT NULL DEFAULT 0,
    update_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_path)
);

CREATE INDEX legacy_import_files_state_idx ON files.legacy_import_files (run_id, state);
