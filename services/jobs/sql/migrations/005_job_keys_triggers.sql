-- jobs.job_keys (migration 003) follows jobs.jobs by itself: a row of keys is added for
-- every inserted job and removed with every deleted one, by statement-level triggers over
-- the statement's transition table (one INSERT or DELETE of keys per statement, not per row).
-- Before this, each statement that inserts or deletes jobs wrote the keys itself, and any
-- insert that forgot (a script, a future query) left a job that no listing would find.
-- UPDATEs fire nothing: the keys never change, which is the point of the table.
CREATE FUNCTION jobs.add_job_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs.job_keys (id, owner, batch_id, created_at, seq)
    SELECT id, owner, batch_id, created_at, seq FROM added;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_add_keys AFTER INSERT ON jobs.jobs
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION jobs.add_job_keys();

CREATE FUNCTION jobs.drop_job_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM jobs.job_keys k USING removed r WHERE k.id = r.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_drop_keys AFTER DELETE ON jobs.jobs
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION jobs.drop_job_keys();
