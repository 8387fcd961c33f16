-- Named queries of the API keys of service users; run only by services/users/api_keys.py.

-- name: insert_api_key
INSERT INTO users.api_keys
    (id, user_id, secret_hash, display_name, permissions, job_types, creator, expire_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING *, revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now()) AS active;

-- name: api_key_auth
-- What authenticating a key needs: the key, its user's role and status and grants, and
-- whether it has expired (by the database's clock, like sessions).
SELECT k.*,
       k.revoke_time IS NULL AND (k.expire_time IS NULL OR k.expire_time > now()) AS active,
       k.expire_time IS NOT NULL AND k.expire_time <= now() AS expired,
       u.role,
       u.status,
       COALESCE(
           (SELECT array_agg(g.permission || ':' || g.resource) FROM users.grants g WHERE g.user_id = u.id),
           '{}'::text[]
       ) AS grants
FROM users.api_keys k
JOIN users.users u ON u.id = k.user_id
WHERE k.id = $1;

-- name: revoke_api_key
UPDATE users.api_keys SET revoke_time = COALESCE(revoke_time, now())
WHERE user_id = $1 AND id = $2
RETURNING *, revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now()) AS active;

-- name: list_api_keys
-- $1 NULL: every user's keys. $2: only active keys. $3/$4: keyset cursor (create_time, id).
SELECT *, revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now()) AS active
FROM users.api_keys
WHERE ($1::text IS NULL OR user_id = $1)
  AND (NOT $2::boolean OR (revoke_time IS NULL AND (expire_time IS NULL OR expire_time > now())))
  AND ($3::timestamptz IS NULL OR (create_time, id) > ($3::timestamptz, $4::text))
ORDER BY create_time, id
LIMIT $5;
