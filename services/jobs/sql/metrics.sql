-- Queries behind the jobs service's observable metrics (services/jobs/queue_metrics.py).

-- name: queue_gauges
-- Jobs waiting or running per type and state, and the longest a ready job has waited; one
-- pass over the unfinished jobs (the claim index and the running jobs' lease index).
SELECT type,
       CASE WHEN state = 'running' THEN 'running'
            WHEN available_at > now() THEN 'scheduled'
            ELSE 'queued' END AS state,
       count(*) AS jobs,
       coalesce(max(extract(epoch FROM now() - available_at))
                FILTER (WHERE state <> 'running' AND available_at <= now()), 0)::float8
           AS oldest_seconds
FROM jobs.jobs
WHERE state IN ('queued', 'scheduled', 'running')
GROUP BY 1, 2;
