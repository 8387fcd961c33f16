-- Claims shared fairly between owners, and the per-owner quota of waiting jobs.
--
-- The claim no longer walks one global priority order (where one owner's backlog at the
-- highest priority a user may set holds everybody else's jobs): it visits the owners that
-- have waiting jobs, takes each owner's jobs in that owner's priority order, and interleaves
-- the owners by a per-owner turn counter (jobs.owner_turns). docs/jobs.md, "Fair claims",
-- states the bound this gives and why.

-- Waiting jobs by owner and type, in claim order. It replaces the global claim index (the
-- claim reads every owner's jobs through this one), so creating a job still writes one claim
-- index entry. The type comes before the order so that a worker's claim reaches an owner's
-- jobs of its types directly, without walking past the owner's jobs of other types. The
-- per-owner quota counts an owner's waiting jobs with it too: finished jobs are not in it,
-- however many an owner has.
CREATE INDEX jobs_claim_owner_v1 ON jobs.jobs (owner, type, priority DESC, available_at, seq)
    WHERE state IN ('queued', 'scheduled');
DROP INDEX jobs.jobs_claim_v1;

-- How many jobs each owner has been given, on a shared scale: the claim serves the owners
-- with the lowest turn first and advances the turn of every owner it served by the number of
-- jobs it took. Owners that fell behind (idle, or new) are lifted to one below the highest
-- turn among the owners waiting at that claim, so idleness earns no credit to spend later.
CREATE TABLE jobs.owner_turns (
    owner text PRIMARY KEY,
    turn bigint NOT NULL
);

-- The owner's waiting (queued or scheduled) jobs, counted up to cap, under a transaction-level
-- advisory lock on the owner: concurrent creations for one owner queue up behind each other
-- until the first commits, and each count (a statement of its own, so a fresh snapshot in
-- READ COMMITTED) sees the jobs every earlier creation added. The quota therefore never
-- overshoots. The two-key form keeps these locks apart from the one-key locks of migrations.
CREATE FUNCTION jobs.lock_owner_waiting(who text, cap integer) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1784632911, hashtext(who));
    RETURN (SELECT count(*) FROM (
        SELECT 1 FROM jobs.jobs
        WHERE owner = who AND state IN ('queued', 'scheduled')
        LIMIT cap) AS waiting);
END
$$;
