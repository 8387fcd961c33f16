-- Users, sessions, grants, activity log, login throttling and pending purges.
CREATE TABLE users.users (
    id              text PRIMARY KEY,
    email           text NOT NULL,
    display_name    text NOT NULL DEFAULT '',
    role            text NOT NULL CHECK (role IN ('admin', 'user', 'service')),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'deleted')),
    password_hash   text,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    delete_time     timestamptz,
    last_login_time timestamptz
);

-- Emails are unique without regard to case among users that are not deleted, so that a
-- deleted user's address can be used again.
CREATE UNIQUE INDEX users_email_key ON users.users (lower(email)) WHERE status <> 'deleted';
CREATE INDEX users_list_idx ON users.users (create_time, id);

-- Only the SHA-256 of a session token is stored.
CREATE TABLE users.sessions (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users.users (id) ON DELETE CASCADE,
    token_hash      bytea NOT NULL UNIQUE,
    create_time     timestamptz NOT NULL DEFAULT now(),
    last_use_time   timestamptz NOT NULL DEFAULT now(),
    expire_time     timestamptz NOT NULL,
    revoke_time     timestamptz,
    user_agent      text NOT NULL DEFAULT '',
    peer            text NOT NULL DEFAULT ''
);

CREATE INDEX sessions_user_idx ON users.sessions (user_id, create_time DESC, id DESC);
CREATE INDEX sessions_expire_idx ON users.sessions (expire_time);

CREATE TABLE users.grants (
    id              text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users.users (id) ON DELETE CASCADE,
    permission      text NOT NULL,
    resource        text NOT NULL,
    creator         text NOT NULL,
    create_time     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, permission, resource)
);

CREATE INDEX grants_list_idx ON users.grants (create_time, id);
CREATE INDEX grants_resource_idx ON users.grants (resource);

-- The activity log of every service. `actor_id` is the acting user's id (NULL for `system`).
CREATE TABLE users.activity (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor           text NOT NULL,
    actor_id        text,
    action          text NOT NULL,
    resource        text NOT NULL,
    request_id      text NOT NULL DEFAULT '',
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    create_time     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX activity_actor_idx ON users.activity (actor_id, id DESC);
CREATE INDEX activity_time_idx ON users.activity (create_time);

-- Failed logins per account key (the normalized email, whether or not such a user exists).
CREATE TABLE users.login_failures (
    email_key       text PRIMARY KEY,
    failures        integer NOT NULL,
    window_start    timestamptz NOT NULL,
    locked_until    timestamptz
);

-- Removal of a deleted user's data in the other services, retried by the sweep until done.
CREATE TABLE users.pending_purges (
    user_id         text PRIMARY KEY REFERENCES users.users (id),
    request_time    timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT '',
    done_time       timestamptz
);

CREATE INDEX pending_purges_due_idx ON users.pending_purges (next_attempt_time) WHERE done_time IS NULL;
