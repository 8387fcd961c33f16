-- The per-user cap of running jobs (setting job_owner_max_running; docs/jobs.md, "Fair claims").
--
-- Whether a job counts against its owner's cap is decided where the job is created, which is
-- the only place that knows the owner's role (the quota path: a job owned by a user, whoever
-- created it). It is recorded on the job row rather than per owner (jobs.owner_turns): the
-- creation that knows it is already writing that row, so the flag costs no write, no lock
-- and no contention with the claims that update jobs.owner_turns; a column with a constant
-- default is added without rewriting the table. The claim reads an owner's flag from one of
-- its waiting jobs (one index probe per ready owner), so an owner whose role changed is
-- capped, or not, by its jobs created under the new role once the older ones have left.
ALTER TABLE jobs.jobs ADD COLUMN capped boolean NOT NULL DEFAULT false;

-- An owner's running capped jobs, counted up to the cap without visiting their finished (or
-- waiting) jobs. Only capped jobs enter it, so services' and admins' jobs (the bulk of the
-- traffic) pay nothing for it; a counter kept with the state changes would instead add a
-- write of a shared per-owner row to every completion, failure, release, cancel and reap.
CREATE INDEX jobs_running_capped_v1 ON jobs.jobs (owner) WHERE state = 'running' AND capped;

-- Lock the given owners' caps until the transaction ends and count each one's running capped
-- jobs, up to cap. The locks are taken in one call, in the order of their keys, so that
-- concurrent claims never wait for each other in a cycle; the count is a statement of its
-- own, after the locks (a fresh snapshot in READ COMMITTED), so it sees the jobs every
-- earlier claim of these owners has started: the cap is never overshot. The two-key form
-- keeps these locks apart from migrations' one-key locks and from the quota's class (006).
CREATE FUNCTION jobs.lock_owners_running(who text[], cap integer)
RETURNS TABLE (owner text, running integer)
-- Rows: one per capped owner with room, a handful. The planner's default (1000) inflated the
-- claim's estimates past jit_above_cost, and compiling it cost 50 ms a claim.
LANGUAGE plpgsql VOLATILE ROWS 10 AS $$
DECLARE
    k integer;
BEGIN
    FOR k IN SELECT DISTINCT hashtext(w) FROM unnest(who) AS w ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(1784632912, k);
    END LOOP;
    RETURN QUERY
        SELECT w, (SELECT count(*) FROM (
                       SELECT 1 FROM jobs.jobs j
                       WHERE j.owner = w AND j.state = 'running' AND j.capped
                       LIMIT cap) AS r)::integer
        FROM unnest(who) AS w;
END
$$;
