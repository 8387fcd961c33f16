-- API keys of service users (services/users/api_keys.py). Only the SHA-256 of a key's
-- secret is stored; the key's id (also its lookup) is the part of the key before the secret.
CREATE TABLE users.api_keys (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users.users (id) ON DELETE CASCADE,
    secret_hash     bytea NOT NULL,
    display_name    text NOT NULL DEFAULT '',
    -- Empty: every permission the user holds (every job type for job_types).
    permissions     text[] NOT NULL DEFAULT '{}',
    job_types       text[] NOT NULL DEFAULT '{}',
    creator         text NOT NULL,
    create_time     timestamptz NOT NULL DEFAULT now(),
    expire_time     timestamptz,
    revoke_time     timestamptz
);

CREATE INDEX api_keys_user_idx ON users.api_keys (user_id, create_time, id);
CREATE INDEX api_keys_list_idx ON users.api_keys (create_time, id);
