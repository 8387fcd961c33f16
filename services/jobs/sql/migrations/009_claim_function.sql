-- The fair claim (docs/jobs.md, "Fair claims") as a function, for its plan. As a statement,
-- PostgreSQL planned it anew on every execution (the plan cache kept choosing custom plans),
-- and planning it cost several times what running it did, on every claim, an idle worker's
-- long-poll included. Inside this function it is planned once per connection
-- (plan_cache_mode = force_generic_plan, set for the function's run only). Every probe it
-- makes is meant to go through an index on the arguments or on values the statement found
-- itself, whatever the table's size; enable_seqscan = off keeps it so when the plan is made
-- from the statistics of an empty queue (an idle worker's first claim), which otherwise
-- chose a sequential scan of jobs.jobs for the UPDATE and kept it until the next ANALYZE
-- (docs/benchmarks.md, "Jobs", has the timings). A change of the claim is a new version of
-- the function, in a migration.
--
-- Take up to $2 claimable jobs of the types $1 for worker $3 under one lease ($4), shared
-- fairly between owners (docs/jobs.md, "Fair claims"):
-- * waiting: the owners with waiting jobs, one index probe each (a loose scan of
--   jobs_claim_owner_v1);
-- * lifted: each owner's turn (jobs.owner_turns), raised to one below the highest turn among
--   them, so an owner that was idle or is new starts just ahead of the busiest one;
-- * ready: those with a claimable job of the types $1 now (one probe per owner and type),
--   and whether the owner's jobs count against the cap of running jobs (one more probe);
-- * room: with a cap $7 (0: none), how many more jobs each capped owner may start: owners
--   already at the cap by this statement's snapshot are left out, the others are counted
--   again under their locks (jobs.lock_owners_running, migration 007), so concurrent claims
--   never take an owner past the cap; owners without room are left out;
-- * candidates: each open owner's first jobs of each type in the owner's priority order,
--   skipping rows other claims hold locked, as many as an even share of $2 plus two (which
--   covers every job the bound lets go first) and the owner's room, at most $2; the owner's
--   k-th job gets the turn (owner's turn + k);
-- * picked: the first $2 candidates, at most its room per owner, by band (priorities above
--   the users' maximum $6, which only services may set, first), then turn, then age: equal
--   turns are always different owners (an owner's own jobs have consecutive turns in its
--   priority order), and between owners the older job goes first; breaking the tie on
--   priority let an owner lifted to a tie lose it again and again, past the bound;
-- * served owners' turns advance by the number of jobs they got.
-- "#variable_conflict use_column": in the statement a name is a column, not a result field.
CREATE FUNCTION jobs.claim_jobs_v1(
    types text[], max_jobs integer, worker text, lease uuid, lease_seconds float8,
    service_priority integer, owner_cap integer)
RETURNS TABLE (
    id uuid, type text, owner text, priority integer, payload jsonb, files text[],
    batch_id uuid, request_id text, attempts integer, max_attempts integer, seq bigint,
    lease_id uuid, worker_id text, error text, trace_context jsonb, available_us bigint,
    lease_expires_us bigint, created_us bigint, started_us bigint, updated_us bigint,
    wait_seconds float8)
LANGUAGE plpgsql VOLATILE ROWS 100
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $claim$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH RECURSIVE waiting(owner) AS (
        (SELECT owner FROM jobs.jobs WHERE state IN ('queued', 'scheduled') ORDER BY owner LIMIT 1)
        UNION ALL
        SELECT (SELECT j.owner FROM jobs.jobs j
                WHERE j.state IN ('queued', 'scheduled') AND j.owner > w.owner
                ORDER BY j.owner LIMIT 1)
        FROM waiting w WHERE w.owner IS NOT NULL
    ), wanted AS (
        SELECT DISTINCT type FROM unnest($1::text[]) AS t(type)
    ), lifted AS (
        SELECT w.owner, coalesce(greatest(t.turn, max(t.turn) OVER () - 1), 0) AS turn
        FROM waiting w LEFT JOIN jobs.owner_turns t ON t.owner = w.owner
        WHERE w.owner IS NOT NULL
    ), ready AS (
        SELECT l.owner, l.turn,
               $7::int > 0 AND (SELECT q.capped FROM jobs.jobs q
                                WHERE q.owner = l.owner AND q.state IN ('queued', 'scheduled')
                                LIMIT 1) AS capped
        FROM lifted l
        WHERE EXISTS (
            SELECT 1 FROM wanted
            WHERE EXISTS (
                SELECT 1 FROM jobs.jobs q
                WHERE q.owner = l.owner AND q.type = wanted.type
                  AND q.state IN ('queued', 'scheduled') AND q.available_at <= now()))
    ), counted AS (
        SELECT * FROM jobs.lock_owners_running(ARRAY(
            SELECT r.owner FROM ready r
            WHERE r.capped AND (SELECT count(*) FROM (
                SELECT 1 FROM jobs.jobs j
                WHERE j.owner = r.owner AND j.state = 'running' AND j.capped
                LIMIT $7::int) AS n) < $7::int
        ), $7::int)
    ), room AS (
        SELECT r.owner, r.turn,
               CASE WHEN r.capped THEN $7::int - coalesce(c.running, $7::int) END AS jobs
        FROM ready r LEFT JOIN counted c ON c.owner = r.owner
    ), open_owners AS (
        SELECT owner, turn, jobs AS room FROM room WHERE jobs IS NULL OR jobs > 0
    ), share AS (
        SELECT least($2, ($2 + count(*) - 1) / greatest(count(*), 1) + 2)::int AS jobs
        FROM open_owners
    ), candidates AS (
        SELECT c.id, c.owner, c.priority, c.available_at, c.seq, r.turn AS base, r.room,
               r.turn + row_number() OVER (
                   PARTITION BY c.owner ORDER BY c.priority DESC, c.available_at, c.seq) AS turn
        FROM open_owners r CROSS JOIN wanted CROSS JOIN LATERAL (
            SELECT q.id, q.owner, q.priority, q.available_at, q.seq FROM jobs.jobs q
            WHERE q.owner = r.owner AND q.type = wanted.type
              AND q.state IN ('queued', 'scheduled') AND q.available_at <= now()
            ORDER BY q.priority DESC, q.available_at, q.seq
            LIMIT least((SELECT jobs FROM share), r.room)
            FOR UPDATE SKIP LOCKED
        ) c
    ), picked AS (
        -- Past its share, an owner's rank is no longer its own priority order across types.
        SELECT id, owner, turn, priority > $6 AS service_band FROM candidates
        WHERE turn - base <= least((SELECT jobs FROM share), room)
        ORDER BY priority > $6 DESC, turn, available_at, seq
        LIMIT $2
    ), served AS (
        INSERT INTO jobs.owner_turns AS t (owner, turn)
        -- In owner order: concurrent claims lock the turns they advance in the same order, so
        -- they wait for each other instead of deadlocking.
        SELECT owner, max(turn) FROM picked GROUP BY owner ORDER BY owner
        -- Concurrent claims serve the same owner: each adds what it took to the stored turn.
        ON CONFLICT (owner) DO UPDATE SET turn = greatest(
            t.turn + (SELECT count(*) FROM picked p WHERE p.owner = t.owner), excluded.turn)
    ), upd AS (
        UPDATE jobs.jobs j
        SET state = 'running', attempts = j.attempts + 1, lease_id = $4, worker_id = $3,
            lease_expires_at = now() + make_interval(secs => $5), started_at = now(),
            updated_at = now(), progress_percent = 0, progress_message = ''
        -- By primary key whatever plan is chosen: joined FROM picked, a generic plan (LIMIT $2
        -- estimated at 10% of the table) hashed a sequential scan of all of jobs.jobs per claim.
        WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
        -- What a claimed job's message carries (convert.fill_claimed_pb): a running job has no
        -- result nor finish time yet, and its progress was just reset. Times as microseconds
        -- since the epoch (exact, and an integer decodes for a fraction of a datetime's cost);
        -- an empty payload as NULL (nothing to decode).
        RETURNING j.id, j.type, j.owner, j.priority, NULLIF(j.payload, '{}') AS payload, j.files,
                  j.batch_id, j.request_id, j.attempts, j.max_attempts, j.seq, j.lease_id,
                  j.worker_id, j.error, j.trace_context,
                  (extract(epoch FROM j.available_at) * 1000000)::int8 AS available_us,
                  (extract(epoch FROM j.lease_expires_at) * 1000000)::int8 AS lease_expires_us,
                  (extract(epoch FROM j.created_at) * 1000000)::int8 AS created_us,
                  (extract(epoch FROM j.started_at) * 1000000)::int8 AS started_us,
                  (extract(epoch FROM j.updated_at) * 1000000)::int8 AS updated_us,
                  extract(epoch FROM now() - j.available_at)::float8 AS wait_seconds
    ), changed AS (
        SELECT jobs.notify_list('mediagrid_jobs_change', array_agg(id::text)) AS n FROM upd
    )
    SELECT upd.* FROM upd JOIN picked p ON p.id = upd.id, changed
    ORDER BY p.service_band DESC, p.turn, upd.available_us, upd.seq;
END
$claim$;
