-- Progress of `mediagrid legacy import-redis` (owned by services/legacy).
-- Legacy user id -> users.users id. A row is written as 'pending' before the user is
-- created, so a crash between the two is recognised on the next run (see docs/migration.md).
CREATE TABLE users.legacy_user_map (
    legacy_id               text PRIMARY KEY,
    email                   text NOT NULL,
    user_id                 text,
    state                   text NOT NULL CHECK (state IN ('pending', 'done')),
    needs_password_reset    boolean NOT NULL DEFAULT false,
    legacy_create_time      timestamptz,
    claim_time              timestamptz NOT NULL DEFAULT now(),
    import_time             timestamptz
);

CREATE UNIQUE INDEX legacy_user_map_user_idx ON users.legacy_user_map (user_id)
    WHERE user_id IS NOT NULL;

-- Records that were not imported: invalid (reason) or conflicting with existing data.
CREATE TABLE users.legacy_rejects (
    source          text NOT NULL,               -- the Redis URL (password removed) + prefix
    key             text NOT NULL,               -- the Redis key
    kind            text NOT NULL CHECK (kind IN ('invalid', 'conflict', 'skipped')),
    reason          text NOT NULL,
    detail          text NOT NULL DEFAULT '',
    update_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, key)
);

-- Where a SCAN stopped: one row per (source, phase); cursor 0 with done = true: finished.
CREATE TABLE users.legacy_checkpoints (
    source          text NOT NULL,
    phase           text NOT NULL CHECK (phase IN ('users', 'jobs')),
    cursor          text NOT NULL DEFAULT '0',
    done            boolean NOT NULL DEFAULT false,
    records         bigint NOT NULL DEFAULT 0,
    update_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, phase)
);
