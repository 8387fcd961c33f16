-- All-or-nothing outcome batches in ONE statement (no BEGIN/COMMIT round trips).
--
-- complete_jobs and fail_jobs end by calling this with the number of rows they changed and
-- the number of leases the worker quoted. When a lease was lost the function raises, the
-- statement fails, and PostgreSQL rolls back every row it had changed (and drops its
-- NOTIFYs): the batch is recorded entirely or not at all, as inside an explicit transaction.
CREATE FUNCTION jobs.require_all_leases(changed bigint, quoted integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF changed <> quoted THEN
        RAISE EXCEPTION 'mediagrid: % of % lease(s) no longer held', quoted - changed, quoted
            USING ERRCODE = 'MGJ01';
    END IF;
    RETURN true;
END
$$;
