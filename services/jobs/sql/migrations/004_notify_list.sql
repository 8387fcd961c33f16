-- One way to NOTIFY a list (job ids, batch ids, job types), however long it is.
--
-- A NOTIFY payload must stay under 8000 bytes, or the statement sending it fails with
-- "payload string too long" and takes its whole change with it: an outcome batch whose jobs
-- came from more than ~215 batches could not be recorded. notify_list sends the items
-- comma-separated, as many per notification as fit (150+ ids, 70+ types of the longest
-- allowed name), and returns how many notifications it sent (0 for an empty or NULL list).
CREATE FUNCTION jobs.notify_list(channel text, items text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    total integer := coalesce(cardinality(items), 0);
    per integer;
    sent integer := 0;
BEGIN
    IF total = 0 THEN
        RETURN 0;
    END IF;
    SELECT greatest(1, 7999 / (max(octet_length(item)) + 1)) INTO per FROM unnest(items) item;
    FOR lo IN 1 .. total BY per LOOP
        PERFORM pg_notify(channel, array_to_string(items[lo:lo + per - 1], ','));
        sent := sent + 1;
    END LOOP;
    RETURN sent;
END
$$;
