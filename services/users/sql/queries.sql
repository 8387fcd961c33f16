-- Named queries of the users service; run only by services/users/repository.py.

-- name: insert_user
INSERT INTO users.users (id, email, display_name, role, password_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: get_user
SELECT * FROM users.users WHERE id = $1;

-- name: get_user_by_email
SELECT * FROM users.users WHERE lower(email) = lower($1) AND status <> 'deleted';

-- name: update_user
-- NULL leaves a column unchanged.
UPDATE users.users
SET email = COALESCE($2, email),
    display_name = COALESCE($3, display_name),
    role = COALESCE($4, role),
    status = COALESCE($5, status),
    update_time = now()
WHERE id = $1 AND status <> 'deleted'
RETURNING *;

-- name: set_password_hash
UPDATE users.users SET password_hash = $2, update_time = now() WHERE id = $1 RETURNING *;

-- name: rehash_password
-- Only when the stored hash is still the one verified (a concurrent change wins).
UPDATE users.users SET password_hash = $3 WHERE id = $1 AND password_hash = $2;

-- name: set_last_login
UPDATE users.users SET last_login_time = now() WHERE id = $1;

-- name: list_users
-- $2 NULL: every status except deleted. $3/$4: keyset cursor (create_time, id).
SELECT * FROM users.users
WHERE ($1::text IS NULL OR role = $1)
  AND (CASE WHEN $2::text IS NULL THEN status <> 'deleted' ELSE status = $2 END)
  AND ($3::timestamptz IS NULL OR (create_time, id) > ($3::timestamptz, $4::text))
ORDER BY create_time, id
LIMIT $5;

-- name: count_other_active_admins
SELECT count(*) FROM users.users WHERE role = 'admin' AND status = 'active' AND id <> $1;

-- name: mark_user_deleted
UPDATE users.users
SET status = 'deleted', delete_time = now(), update_time = now()
WHERE id = $1 AND status <> 'deleted'
RETURNING *;

-- name: scrub_user
-- Removes personal data of a deleted user once its data elsewhere is gone.
UPDATE users.users
SET email = 'deleted-' || id || '@invalid', display_name = '', password_hash = NULL, update_time = now()
WHERE id = $1 AND status = 'deleted';

-- name: insert_session
INSERT INTO users.sessions (id, user_id, token_hash, expire_time, user_agent, peer)
VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6)
RETURNING *;

-- name: session_auth
-- $2: idle timeout, $3: how stale last_use_time may get before it is refreshed (seconds).
SELECT s.*,
       u.role,
       u.status,
       s.expire_time > now() AS within_absolute,
       s.last_use_time > now() - make_interval(secs => $2) AS within_idle,
       s.last_use_time < now() - make_interval(secs => $3) AS needs_touch,
       COALESCE(
           (SELECT array_agg(g.permission || ':' || g.resource) FROM users.grants g WHERE g.user_id = u.id),
           '{}'::text[]
       ) AS grants
FROM users.sessions s
JOIN users.users u ON u.id = s.user_id
WHERE s.token_hash = $1;

-- name: touch_session
UPDATE users.sessions SET last_use_time = now() WHERE id = $1 AND revoke_time IS NULL;

-- name: revoke_session
UPDATE users.sessions SET revoke_time = COALESCE(revoke_time, now())
WHERE user_id = $1 AND id = $2
RETURNING *;

-- name: revoke_user_sessions
-- Every live session of a user except $2 (NULL: all of them).
WITH revoked AS (
    UPDATE users.sessions SET revoke_time = now()
    WHERE user_id = $1 AND revoke_time IS NULL AND ($2::text IS NULL OR id <> $2)
    RETURNING 1
)
SELECT count(*) FROM revoked;

-- name: list_sessions
-- $2: only active sessions; $3: idle timeout (seconds); $4/$5: keyset cursor (create_time, id).
SELECT * FROM users.sessions
WHERE user_id = $1
  AND (NOT $2::boolean OR (revoke_time IS NULL AND expire_time > now()
                           AND last_use_time > now() - make_interval(secs => $3)))
  AND ($4::timestamptz IS NULL OR (create_time, id) < ($4::timestamptz, $5::text))
ORDER BY create_time DESC, id DESC
LIMIT $6;

-- name: delete_ended_sessions
-- Sessions that ended (revoked, expired or idle) before the cutoff $1; $2 idle timeout.
DELETE FROM users.sessions WHERE id IN (
    SELECT id FROM users.sessions
    WHERE revoke_time < $1
       OR expire_time < $1
       OR last_use_time + make_interval(secs => $2) < $1
    LIMIT $3
);

-- name: get_throttle_key
SELECT key FROM users.throttle_key;

-- name: count_login_events
-- One event under each key of $1 (sorted, so that concurrent logins lock rows in one order)
-- within a window of $2 seconds; a window that has passed starts again at 1. Returns each key's
-- count and the seconds its window has left.
INSERT INTO users.login_throttle AS t (key, count, window_start, last_time)
SELECT k, 1, now(), now() FROM unnest($1::bytea[]) AS k
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN t.window_start <= now() - make_interval(secs => $2) THEN 1 ELSE t.count + 1 END,
    window_start = CASE WHEN t.window_start <= now() - make_interval(secs => $2) THEN now() ELSE t.window_start END,
    last_time = now()
RETURNING t.key, t.count,
          EXTRACT(EPOCH FROM (t.window_start + make_interval(secs => $2) - now()))::float8 AS window_left;

-- name: login_throttle_counts
-- The counts of keys $1 whose window ($2 seconds) is still open, with the seconds since each
-- key's last event.
SELECT key, count, EXTRACT(EPOCH FROM (now() - last_time))::float8 AS age
FROM users.login_throttle
WHERE key = ANY($1::bytea[]) AND window_start > now() - make_interval(secs => $2);

-- name: forget_login_failures
-- After a successful login: the failures of that (account, address) key $1 are forgotten and
-- taken off the account key $2, since the address has shown they were its owner's mistakes.
WITH gone AS (
    DELETE FROM users.login_throttle WHERE key = $1 RETURNING count
)
UPDATE users.login_throttle a SET count = greatest(0, a.count - gone.count)
FROM gone
WHERE a.key = $2;

-- name: delete_stale_login_throttles
-- Rows whose window started before the cutoff $1 count nothing any more.
DELETE FROM users.login_throttle WHERE key IN (
    SELECT key FROM users.login_throttle WHERE window_start < $1 LIMIT $2
);

-- name: insert_grant
INSERT INTO users.grants (id, user_id, permission, resource, creator)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, permission, resource) DO NOTHING
RETURNING *;

-- name: get_grant_by_key
SELECT * FROM users.grants WHERE user_id = $1 AND permission = $2 AND resource = $3;

-- name: get_grant
SELECT * FROM users.grants WHERE user_id = $1 AND id = $2;

-- name: delete_grant
DELETE FROM users.grants WHERE user_id = $1 AND id = $2 RETURNING *;

-- name: delete_user_grants
DELETE FROM users.grants WHERE user_id = $1;

-- name: list_grants
-- NULL filters match everything; $4/$5: keyset cursor (create_time, id).
SELECT * FROM users.grants
WHERE ($1::text IS NULL OR user_id = $1)
  AND ($2::text IS NULL OR permission = $2)
  AND ($3::text IS NULL OR resource = $3)
  AND ($4::timestamptz IS NULL OR (create_time, id) > ($4::timestamptz, $5::text))
ORDER BY create_time, id
LIMIT $6;

-- name: insert_activity
INSERT INTO users.activity (actor, actor_id, action, resource, request_id, metadata)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: list_activity
-- NULL filters match everything; $2 exact action, $3 action prefix; $6 keyset cursor (id).
SELECT * FROM users.activity
WHERE ($1::text IS NULL OR actor_id = $1)
  AND ($2::text IS NULL OR action = $2)
  AND ($3::text IS NULL OR starts_with(action, $3))
  AND ($4::timestamptz IS NULL OR create_time >= $4)
  AND ($5::timestamptz IS NULL OR create_time < $5)
  AND ($6::bigint IS NULL OR id < $6)
ORDER BY id DESC
LIMIT $7;

-- name: delete_old_activity
DELETE FROM users.activity WHERE id IN (
    SELECT id FROM users.activity WHERE create_time < $1 LIMIT $2
);

-- name: insert_pending_purge
INSERT INTO users.pending_purges (user_id) VALUES ($1)
ON CONFLICT (user_id) DO UPDATE SET done_time = NULL, next_attempt_time = now()
RETURNING *;

-- name: get_pending_purge
SELECT * FROM users.pending_purges WHERE user_id = $1;

-- name: due_purges
SELECT * FROM users.pending_purges
WHERE done_time IS NULL AND next_attempt_time <= now()
ORDER BY next_attempt_time
LIMIT $1;

-- name: purge_done
UPDATE users.pending_purges
SET done_time = now(), attempts = attempts + 1, last_error = ''
WHERE user_id = $1;

-- name: purge_failed
UPDATE users.pending_purges
SET attempts = attempts + 1, last_error = $2, next_attempt_time = now() + make_interval(secs => $3)
WHERE user_id = $1
RETURNING *;

-- name: try_sweep_lock
SELECT pg_try_advisory_lock($1);

-- name: sweep_unlock
SELECT pg_advisory_unlock($1);
