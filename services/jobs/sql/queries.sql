-- Every SQL statement of the jobs service. Loaded once by services/jobs/repository.py.
--
-- Notification channels (payloads are comma-separated lists, sent by jobs.notify_list,
-- migration 004, in as many notifications as the 8000-byte payload limit needs):
--   mediagrid_jobs_queue   job types that got claimable jobs (wakes idle ClaimJobs)
--   mediagrid_jobs_change  ids of jobs whose state or progress changed (WatchJob)
--   mediagrid_jobs_batch   ids of batches whose jobs changed (WatchBatch)

-- name: insert_job
-- One job in one statement, its request-id dedupe included: a (owner, request_id) seen before
-- inserts nothing and returns the job stored under it instead (created = false), read in the
-- same statement; only a job committed by a concurrent request after this statement began is
-- invisible to it (no row: the repository reads it then). With a quota $11 (NULL: none), the
-- owner's waiting jobs are counted under the owner's lock first (jobs.lock_owner_waiting,
-- migration 006) and nothing is inserted when the job would take them past $11; $12: the job
-- counts against its owner's cap of running jobs (migration 007); $13: the creating request's
-- trace context (migration 008).
WITH quota AS (
    SELECT CASE WHEN $11::int IS NOT NULL THEN jobs.lock_owner_waiting($1, $11) END AS waiting
), ins AS (
    INSERT INTO jobs.jobs (id, type, owner, state, priority, payload, files, batch_id,
                           request_id, max_attempts, available_at, capped, trace_context)
    SELECT $3::uuid, $4::text, $1::text,
           CASE WHEN $10::timestamptz > now() THEN 'scheduled' ELSE 'queued' END,
           $5::int, $6::jsonb, $7::text[], $2::uuid, $8::text, $9::int,
           coalesce($10::timestamptz, now()), $12::bool, $13::jsonb
    WHERE $11::int IS NULL OR (SELECT waiting FROM quota) < $11
    ON CONFLICT (owner, request_id) WHERE request_id IS NOT NULL DO NOTHING
    RETURNING *
), wake AS (
    -- Scheduled jobs too: an idle claim must learn when the next one becomes due.
    SELECT jobs.notify_list('mediagrid_jobs_queue', array_agg(type)) AS n FROM ins
)
SELECT true AS created, ins.* FROM ins, wake
UNION ALL
SELECT false, j.* FROM jobs.jobs j
WHERE $8::text IS NOT NULL AND j.owner = $1 AND j.request_id = $8
  AND NOT EXISTS (SELECT FROM ins);

-- name: insert_jobs_count
-- The jobs of a batch too large for create_batch, one chunk per statement, given as parallel
-- arrays; a (owner, request_id) seen before inserts nothing. $11: the jobs count against their
-- owner's cap of running jobs (migration 007), $12: the creating request's trace context.
-- Returns how many were stored and how many of those are scheduled.
WITH input AS (
    SELECT *
    FROM unnest($3::uuid[], $4::text[], $5::int[], $6::text[], $7::text[], $8::text[],
                $9::int[], $10::timestamptz[])
        AS t(id, type, priority, payload, files, request_id, max_attempts, schedule_time)
), ins AS (
    INSERT INTO jobs.jobs (id, type, owner, state, priority, payload, files, batch_id,
                           request_id, max_attempts, available_at, capped, trace_context)
    SELECT id, type, $1,
           CASE WHEN schedule_time > now() THEN 'scheduled' ELSE 'queued' END,
           priority, payload::jsonb,
           CASE WHEN files = '[]' THEN '{}'::text[]
                ELSE ARRAY(SELECT jsonb_array_elements_text(files::jsonb)) END,
           $2, request_id, max_attempts, coalesce(schedule_time, now()), $11, $12::jsonb
    FROM input
    ON CONFLICT (owner, request_id) WHERE request_id IS NOT NULL DO NOTHING
    RETURNING type, state
), wake AS (
    -- Scheduled jobs too: an idle claim must learn when the next one becomes due.
    SELECT jobs.notify_list('mediagrid_jobs_queue', array_agg(DISTINCT type)) AS n FROM ins
)
SELECT count(*) AS stored, count(*) FILTER (WHERE state = 'scheduled') AS scheduled
FROM ins, wake;

-- name: create_batch
-- A batch and its jobs (given as parallel arrays, none with a request_id) in one statement:
-- one round trip and one commit. With a quota $12 (NULL: none), the owner's waiting jobs are
-- counted under the owner's lock first (jobs.lock_owner_waiting, migration 006) and nothing is
-- inserted when the jobs would take them past $12; $13: the jobs count against their owner's
-- cap of running jobs (migration 007); $14: the creating request's trace context. A batch
-- request_id $4 seen before, or the quota, inserts nothing: the row then has a NULL id and
-- the owner's waiting count (with a quota). Otherwise: the batch and how many of its jobs
-- are scheduled (the others are queued).
WITH quota AS (
    SELECT CASE WHEN $12::int IS NOT NULL THEN jobs.lock_owner_waiting($2, $12) END AS waiting
), batch AS (
    INSERT INTO jobs.batches (id, owner, display_name, request_id, total_jobs)
    SELECT $1::uuid, $2::text, $3::text, $4::text, cardinality($5::uuid[])
    WHERE $12::int IS NULL OR (SELECT waiting FROM quota) + cardinality($5::uuid[]) <= $12
    ON CONFLICT (owner, request_id) WHERE request_id IS NOT NULL DO NOTHING
    RETURNING *
), input AS (
    SELECT *
    FROM unnest($5::uuid[], $6::text[], $7::int[], $8::text[], $9::text[], $10::int[],
                $11::timestamptz[])
        AS t(id, type, priority, payload, files, max_attempts, schedule_time)
), ins AS (
    INSERT INTO jobs.jobs (id, type, owner, state, priority, payload, files, batch_id,
                           max_attempts, available_at, capped, trace_context)
    SELECT i.id, i.type, b.owner,
           CASE WHEN i.schedule_time > now() THEN 'scheduled' ELSE 'queued' END,
           i.priority, i.payload::jsonb,
           CASE WHEN i.files = '[]' THEN '{}'::text[]
                ELSE ARRAY(SELECT jsonb_array_elements_text(i.files::jsonb)) END,
           b.id, i.max_attempts, coalesce(i.schedule_time, now()), $13, $14::jsonb
    FROM input i, batch b
    RETURNING type, state
), wake AS (
    -- Scheduled jobs too: an idle claim must learn when the next one becomes due.
    SELECT jobs.notify_list('mediagrid_jobs_queue', array_agg(DISTINCT type)) AS n,
           count(*) FILTER (WHERE state = 'scheduled') AS scheduled
    FROM ins
)
SELECT b.*, wake.scheduled, (SELECT waiting FROM quota) AS waiting
FROM wake LEFT JOIN batch b ON true;

-- name: lock_owner_waiting
-- Inside a transaction: lock owner $1's quota until it ends and count its waiting jobs, up
-- to $2 (migration 006).
SELECT jobs.lock_owner_waiting($1, $2);

-- name: owner_waiting
-- Owner $1's waiting (queued or scheduled) jobs, counted up to $2.
SELECT count(*) FROM (
    SELECT 1 FROM jobs.jobs WHERE owner = $1 AND state IN ('queued', 'scheduled') LIMIT $2
) AS waiting;

-- name: insert_batch
INSERT INTO jobs.batches (id, owner, display_name, request_id, total_jobs)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (owner, request_id) WHERE request_id IS NOT NULL DO NOTHING
RETURNING *;

-- name: get_job
SELECT * FROM jobs.jobs WHERE id = $1;

-- name: get_job_by_request_id
SELECT * FROM jobs.jobs WHERE owner = $1 AND request_id = $2;

-- name: get_batch
SELECT * FROM jobs.batches WHERE id = $1;

-- name: get_batch_by_request_id
SELECT * FROM jobs.batches WHERE owner = $1 AND request_id = $2;

-- name: batch_job_names
SELECT id FROM jobs.job_keys WHERE batch_id = $1 ORDER BY seq;

-- name: batch_counts
-- Counts by state and the summed progress of running jobs (finished jobs count as 100).
SELECT j.state, count(*) AS n, coalesce(sum(j.progress_percent), 0)::float8 AS progress
FROM jobs.job_keys k JOIN jobs.jobs j ON j.id = k.id
WHERE k.batch_id = $1 GROUP BY j.state;

-- name: get_job_with_position
-- The job and, while it waits, its queue position: how many claimable jobs of the same type
-- a worker would take before it, in the same statement (one round trip for GetJob/WatchJob).
SELECT j.*,
       CASE WHEN j.state IN ('queued', 'scheduled') THEN (
           SELECT count(*) FROM jobs.jobs q
           WHERE q.state IN ('queued', 'scheduled') AND q.type = j.type
             AND q.available_at <= now()
             AND (q.priority > j.priority
                  OR (q.priority = j.priority AND (q.available_at, q.seq) < (j.available_at, j.seq)))
       ) END AS queue_position
FROM jobs.jobs j WHERE j.id = $1;

-- name: list_jobs_by_owner
-- Two listing statements rather than one with "$1 IS NULL OR owner = $1": each walks its own
-- index (owner/created here, created for list_jobs_all), which a generic plan of the merged
-- statement could not choose per call.
SELECT j.* FROM jobs.job_keys k JOIN jobs.jobs j ON j.id = k.id
WHERE k.owner = $1
  AND ($2::text[] IS NULL OR j.state = ANY($2))
  AND ($3::text[] IS NULL OR j.type = ANY($3))
  AND ($4::uuid IS NULL OR k.batch_id = $4)
  AND ($5::timestamptz IS NULL OR k.created_at >= $5)
  AND ($6::timestamptz IS NULL OR k.created_at < $6)
  AND ($7::timestamptz IS NULL OR (k.created_at, k.id) < ($7, $8::uuid))
ORDER BY k.created_at DESC, k.id DESC
LIMIT $9;

-- name: list_jobs_all
SELECT j.* FROM jobs.job_keys k JOIN jobs.jobs j ON j.id = k.id
WHERE ($1::text[] IS NULL OR j.state = ANY($1))
  AND ($2::text[] IS NULL OR j.type = ANY($2))
  AND ($3::uuid IS NULL OR k.batch_id = $3)
  AND ($4::timestamptz IS NULL OR k.created_at >= $4)
  AND ($5::timestamptz IS NULL OR k.created_at < $5)
  AND ($6::timestamptz IS NULL OR (k.created_at, k.id) < ($6, $7::uuid))
ORDER BY k.created_at DESC, k.id DESC
LIMIT $8;

-- name: cancel_jobs
-- Cancel the given unfinished jobs (running ones lose their lease).
WITH upd AS (
    UPDATE jobs.jobs
    SET state = 'cancelled', lease_id = NULL, lease_expires_at = NULL, worker_id = NULL,
        finished_at = now(), updated_at = now(), error = $2
    WHERE id = ANY($1::uuid[]) AND state IN ('queued', 'scheduled', 'running')
    RETURNING *
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text)) AS n FROM upd
), batches AS (
    SELECT jobs.notify_list('mediagrid_jobs_batch', array_agg(DISTINCT batch_id::text)
                                                      FILTER (WHERE batch_id IS NOT NULL)) AS n
    FROM upd
)
SELECT upd.* FROM upd, changed, batches;

-- name: cancel_batch_jobs
-- Cancel the unfinished jobs of batch $1 (running ones lose their lease); returns how many.
WITH upd AS (
    UPDATE jobs.jobs
    SET state = 'cancelled', lease_id = NULL, lease_expires_at = NULL, worker_id = NULL,
        finished_at = now(), updated_at = now(), error = $2
    WHERE id IN (SELECT id FROM jobs.job_keys WHERE batch_id = $1)
      AND state IN ('queued', 'scheduled', 'running')
    RETURNING id, batch_id
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text))
         + jobs.notify_list('mediagrid_jobs_batch', array_agg(DISTINCT batch_id::text)) AS n
    FROM upd
)
SELECT count(*) FROM upd, changed;

-- name: retry_job
-- A finished-but-not-succeeded job back to the queue with a fresh set of attempts; with a
-- quota $3 (NULL: none), only while its owner $2 has fewer than $3 waiting jobs (counted under
-- the owner's lock, like insert_jobs).
WITH quota AS (
    SELECT CASE WHEN $3::int IS NOT NULL THEN jobs.lock_owner_waiting($2, $3) END AS waiting
), upd AS (
    UPDATE jobs.jobs
    SET state = 'queued', attempts = 0, available_at = now(), finished_at = NULL,
        started_at = NULL, result = NULL, error = '', progress_percent = 0,
        progress_message = '', updated_at = now()
    WHERE id = $1 AND state IN ('failed', 'dead', 'cancelled')
      AND ($3::int IS NULL OR (SELECT waiting FROM quota) < $3)
    RETURNING *
), wake AS (
    SELECT jobs.notify_list('mediagrid_jobs_queue', array_agg(type)) AS n FROM upd
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text))
         + jobs.notify_list('mediagrid_jobs_batch', array_agg(batch_id::text)
                                                    FILTER (WHERE batch_id IS NOT NULL)) AS n
    FROM upd
)
SELECT upd.* FROM upd, wake, changed;

-- name: claim_jobs
-- Take up to $2 claimable jobs of the types $1 for worker $3 under one lease ($4, held for $5
-- seconds), shared fairly between owners; $6: the most a user may set as priority, $7: the
-- cap of running jobs (0: none). The statement is jobs.claim_jobs_v1 (migration 009, which
-- says why it is a function).
SELECT * FROM jobs.claim_jobs_v1($1::text[], $2::int, $3::text, $4::uuid, $5::float8,
                                 $6::int, $7::int);

-- name: heartbeat
-- Lease checks on batches (heartbeat, complete, fail, release) match rows by id and lease
-- only: a non-null lease_id means RUNNING (CHECK jobs_running_has_lease). Spelling out
-- state = 'running' as well let the planner drive a generic plan from the partial
-- jobs_lease_expiry_v1 index (statistics said "1 running job") and compare every running
-- job with every quoted lease: 187 instead of 50 us per completed job at 500 running.
-- Extend the leases that are still held; returns the ids extended.
UPDATE jobs.jobs j
SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
FROM unnest($1::uuid[], $2::uuid[]) AS t(id, lease_id)
WHERE j.id = t.id AND j.lease_id = t.lease_id
RETURNING j.id, j.lease_expires_at;

-- name: report_progress
WITH upd AS (
    UPDATE jobs.jobs
    SET progress_percent = $3, progress_message = $4, updated_at = now()
    WHERE id = $1 AND lease_id = $2 AND state = 'running'
    RETURNING id, batch_id
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text))
         + jobs.notify_list('mediagrid_jobs_batch', array_agg(batch_id::text)
                                                    FILTER (WHERE batch_id IS NOT NULL)) AS n
    FROM upd
)
SELECT upd.id FROM upd, changed;

-- name: complete_jobs
-- Record successes; only rows still RUNNING under the quoted lease change, and only when all
-- of them are: a lost lease fails the whole statement (jobs.require_all_leases, SQLSTATE
-- MGJ01), so nothing is recorded without an explicit transaction.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS t(id, lease_id, result)
), upd AS (
    UPDATE jobs.jobs j
    SET state = 'succeeded', result = input.result::jsonb, finished_at = now(),
        updated_at = now(), progress_percent = 100, lease_id = NULL, lease_expires_at = NULL
    FROM input
    WHERE j.id = input.id AND j.lease_id = input.lease_id
    RETURNING j.id, j.type, j.batch_id, j.state, j.capped,
              extract(epoch FROM now() - j.started_at)::float8 AS run_seconds
), wake AS (
    -- A capped job that ends makes room for its owner's next one: wake idle claims of its
    -- type (the owner's waiting jobs are most likely of the same type).
    SELECT jobs.notify_list('mediagrid_jobs_queue', array_agg(DISTINCT type)
                                                    FILTER (WHERE capped)) AS n
    FROM upd
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text)) AS n FROM upd
), batches AS (
    SELECT jobs.notify_list('mediagrid_jobs_batch', array_agg(DISTINCT batch_id::text)
                                                      FILTER (WHERE batch_id IS NOT NULL)) AS n
    FROM upd
), guard AS (
    SELECT jobs.require_all_leases(count(*), cardinality($1::uuid[])) AS ok FROM upd
)
-- The guard is a one-time filter: evaluated (and so raising) before any row is returned,
-- even when no row changed.
SELECT upd.id, upd.type, upd.state, upd.run_seconds FROM upd, wake, changed, batches
WHERE (SELECT ok FROM guard);

-- name: fail_jobs
-- Record failures: permanent -> failed; retryable -> scheduled after a backoff while attempts
-- remain, else dead. $5 are worker-given delays (NULL = exponential backoff with full jitter
-- from base $6 capped at $7). All or nothing, like complete_jobs.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bool[], $5::float8[])
        AS t(id, lease_id, error, retryable, delay)
), upd AS (
    UPDATE jobs.jobs j
    SET state = CASE
            WHEN NOT input.retryable THEN 'failed'
            WHEN j.attempts >= j.max_attempts THEN 'dead'
            ELSE 'scheduled' END,
        available_at = CASE
            WHEN input.retryable AND j.attempts < j.max_attempts THEN now() + make_interval(
                secs => coalesce(input.delay,
                                 random() * least($7, $6 * power(2, least(j.attempts - 1, 60)))))
            ELSE j.available_at END,
        finished_at = CASE
            WHEN input.retryable AND j.attempts < j.max_attempts THEN NULL ELSE now() END,
        error = input.error, updated_at = now(), lease_id = NULL, lease_expires_at = NULL
    FROM input
    WHERE j.id = input.id AND j.lease_id = input.lease_id
    RETURNING j.id, j.type, j.batch_id, j.state, j.capped,
              extract(epoch FROM now() - j.started_at)::float8 AS run_seconds
), wake AS (
    -- Retries are not claimable yet, but idle claims must learn when they become due; a
    -- capped job that ends makes room for its owner's next one (as in complete_jobs).
    SELECT jobs.notify_list('mediagrid_jobs_queue', array_agg(DISTINCT type)
                                                    FILTER (WHERE state = 'scheduled'
                                                            OR capped)) AS n
    FROM upd
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text)) AS n FROM upd
), batches AS (
    SELECT jobs.notify_list('mediagrid_jobs_batch', array_agg(DISTINCT batch_id::text)
                                                      FILTER (WHERE batch_id IS NOT NULL)) AS n
    FROM upd
), guard AS (
    SELECT jobs.require_all_leases(count(*), cardinality($1::uuid[])) AS ok FROM upd
)
SELECT upd.id, upd.type, upd.state, upd.run_seconds FROM upd, wake, changed, batches
WHERE (SELECT ok FROM guard);

-- name: release_jobs
-- Give running jobs back to the queue without using up the attempt (graceful worker stop).
-- Like a rescued job (reap_expired), a released one keeps its place: available_at is left as
-- it was and the turn its claim added to its owner is given back, turns locked in owner order.
WITH upd AS (
    UPDATE jobs.jobs j
    SET state = 'queued', attempts = j.attempts - 1, lease_id = NULL, lease_expires_at = NULL,
        worker_id = NULL, updated_at = now(), progress_percent = 0, progress_message = ''
    FROM unnest($1::uuid[], $2::uuid[]) AS t(id, lease_id)
    WHERE j.id = t.id AND j.lease_id = t.lease_id
    RETURNING j.id, j.type, j.owner
), released AS (
    SELECT owner, count(*) AS n FROM upd GROUP BY owner
), returned AS (
    UPDATE jobs.owner_turns t SET turn = t.turn - r.n
    FROM released r
    WHERE t.owner = r.owner
      AND t.owner = ANY(ARRAY(
          SELECT l.owner FROM jobs.owner_turns l
          WHERE l.owner IN (SELECT owner FROM released)
          ORDER BY l.owner
          FOR UPDATE))
    RETURNING t.owner
), wake AS (
    SELECT jobs.notify_list('mediagrid_jobs_queue', array_agg(DISTINCT type)) AS n FROM upd
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text)) AS n FROM upd
)
SELECT upd.id FROM upd, wake, changed;

-- name: lease_states
-- The current state and lease of the given jobs (to explain a rejected report).
SELECT id, state, lease_id FROM jobs.jobs WHERE id = ANY($1::uuid[]);

-- name: reap_expired
-- Jobs whose lease expired go back to the queue, or to dead when attempts are exhausted. A
-- requeued job keeps its place in the queue (docs/jobs.md, "Rescued jobs"): its available_at,
-- which orders an owner's jobs of one priority and breaks ties between owners, is left as it
-- was (a retry after a failure is scheduled later on purpose; a lost lease is nobody's
-- choice), and the turn its claim added to its owner (jobs.owner_turns) is given back, since
-- that owner was not served after all. Turns are locked in owner order before they change,
-- as claims lock them, so a claim and the reaper wait for each other instead of deadlocking.
WITH expired AS (
    SELECT id FROM jobs.jobs
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE jobs.jobs j
    SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'queued' END,
        finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        error = 'lease expired (worker ' || coalesce(j.worker_id, '?') || ' stopped reporting)',
        lease_id = NULL, lease_expires_at = NULL, updated_at = now()
    FROM expired WHERE j.id = expired.id
    RETURNING j.id, j.type, j.state, j.batch_id, j.owner
), requeued AS (
    SELECT owner, count(*) AS n FROM upd WHERE state = 'queued' GROUP BY owner
), returned AS (
    UPDATE jobs.owner_turns t SET turn = t.turn - r.n
    FROM requeued r
    WHERE t.owner = r.owner
      AND t.owner = ANY(ARRAY(
          SELECT l.owner FROM jobs.owner_turns l
          WHERE l.owner IN (SELECT owner FROM requeued)
          ORDER BY l.owner
          FOR UPDATE))
    RETURNING t.owner
), wake AS (
    SELECT jobs.notify_list('mediagrid_jobs_queue', array_agg(DISTINCT type)
                                                    FILTER (WHERE state = 'queued')) AS n
    FROM upd
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text)) AS n FROM upd
), batches AS (
    SELECT jobs.notify_list('mediagrid_jobs_batch', array_agg(DISTINCT batch_id::text)
                                                      FILTER (WHERE batch_id IS NOT NULL)) AS n
    FROM upd
)
SELECT upd.id, upd.type, upd.state FROM upd, wake, changed, batches;

-- name: next_due
-- Seconds until the earliest scheduled job of the types $1 becomes claimable (NULL: none).
SELECT extract(epoch FROM min(available_at) - now())::float8 FROM jobs.jobs
WHERE state IN ('queued', 'scheduled') AND type = ANY($1::text[]);

-- name: purge_finished
-- Delete one chunk of jobs in final state $1 that finished before $2 (their keys go with
-- them: migration 005).
DELETE FROM jobs.jobs WHERE id IN (
    SELECT id FROM jobs.jobs
    WHERE state = $1 AND finished_at < $2
      AND state IN ('succeeded', 'failed', 'dead', 'cancelled')
    ORDER BY finished_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
);

-- name: purge_empty_batches
-- Delete one chunk of batches created before $1 that no longer hold any job.
DELETE FROM jobs.batches WHERE id IN (
    SELECT b.id FROM jobs.batches b
    WHERE b.created_at < $1
      AND NOT EXISTS (SELECT 1 FROM jobs.job_keys k WHERE k.batch_id = b.id)
    LIMIT $2
);

-- name: queue_depths
SELECT type, priority,
       count(*) FILTER (WHERE available_at <= now()) AS ready,
       count(*) FILTER (WHERE available_at > now()) AS scheduled
FROM jobs.jobs
WHERE state IN ('queued', 'scheduled') AND ($1::text[] IS NULL OR type = ANY($1))
GROUP BY type, priority
ORDER BY type, priority DESC;

-- name: oldest_wait
SELECT coalesce(extract(epoch FROM now() - min(available_at)), 0)::float8 FROM jobs.jobs
WHERE state IN ('queued', 'scheduled') AND available_at <= now()
  AND ($1::text[] IS NULL OR type = ANY($1));

-- name: running_count
SELECT count(*) FROM jobs.jobs
WHERE state = 'running' AND ($1::text[] IS NULL OR type = ANY($1));

-- name: finished_windows
-- Succeeded and failed (failed + dead) counts over each window of $1 seconds.
SELECT w.seconds,
       count(j.id) FILTER (WHERE j.state = 'succeeded') AS succeeded,
       count(j.id) FILTER (WHERE j.state IN ('failed', 'dead')) AS failed
FROM unnest($1::int[]) AS w(seconds)
LEFT JOIN jobs.jobs j
  ON j.state IN ('succeeded', 'failed', 'dead', 'cancelled')
 AND j.finished_at >= now() - make_interval(secs => w.seconds)
 AND ($2::text[] IS NULL OR j.type = ANY($2))
GROUP BY w.seconds
ORDER BY w.seconds;

-- name: counts_by_owner
SELECT j.state, count(*) AS n
FROM jobs.job_keys k JOIN jobs.jobs j ON j.id = k.id
WHERE k.owner = $1 GROUP BY j.state;

-- name: cancel_owner_chunk
-- Cancel up to $2 unfinished jobs of owner $1.
WITH picked AS (
    SELECT j.id FROM jobs.job_keys k JOIN jobs.jobs j ON j.id = k.id
    WHERE k.owner = $1 AND j.state IN ('queued', 'scheduled', 'running')
    LIMIT $2
    FOR UPDATE OF j
), upd AS (
    UPDATE jobs.jobs j
    SET state = 'cancelled', lease_id = NULL, lease_expires_at = NULL, worker_id = NULL,
        finished_at = now(), updated_at = now(), error = 'owner deleted'
    FROM picked WHERE j.id = picked.id
    RETURNING j.id
), changed AS (
    SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text)) AS n FROM upd
)
SELECT count(*) FROM upd, changed;

-- name: delete_owner_chunk
-- Delete up to $2 jobs of owner $1.
WITH del AS (
    DELETE FROM jobs.jobs WHERE id IN (
        SELECT id FROM jobs.job_keys WHERE owner = $1 LIMIT $2)
    RETURNING id
)
SELECT count(*) FROM del;

-- name: delete_owner_batch_jobs
-- Jobs left in the owner's batches once the owner's own jobs are gone: an admin may have
-- added one of its own. The batches (delete_owner_batches) can only go after them.
DELETE FROM jobs.jobs WHERE id IN (
    SELECT k.id FROM jobs.job_keys k JOIN jobs.batches b ON b.id = k.batch_id
    WHERE b.owner = $1);

-- name: delete_owner_batches
WITH del AS (DELETE FROM jobs.batches WHERE owner = $1 RETURNING id)
SELECT count(*) FROM del;

-- name: delete_owner_turn
DELETE FROM jobs.owner_turns WHERE owner = $1;
