-- Login throttling keyed by HMAC-SHA256 instead of emails in clear (services/users/throttle.py).
-- The old per-email counters are dropped: they held emails, and they locked accounts.
DROP TABLE users.login_failures;

-- One counter per keyed hash of a client address, an account, or an (account, address) pair.
CREATE TABLE users.login_throttle (
    key             bytea PRIMARY KEY,
    count           integer NOT NULL,
    window_start    timestamptz NOT NULL,
    last_time       timestamptz NOT NULL
);

CREATE INDEX login_throttle_window_idx ON users.login_throttle (window_start);

-- The HMAC key of login_throttle, used when MEDIAGRID_LOGIN_THROTTLE_KEY is not set: stable
-- across replicas and restarts. One row.
CREATE TABLE users.throttle_key (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    key             bytea NOT NULL
);

INSERT INTO users.throttle_key (key)
VALUES (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
