-- The job queue: jobs, batches and the indexes that keep claiming cheap.
--
-- Design notes:
-- * Claimable rows (queued, or scheduled and due) are found through PARTIAL indexes that
--   contain only rows in those states, so claim cost does not grow with finished rows.
-- * `seq` orders jobs created in the same instant (one batch insert shares now()).
-- * Outcomes are guarded by the lease: every report names (id, lease_id) and only a
--   RUNNING row with that lease accepts it, so a job's outcome is recorded once.

CREATE TABLE jobs.batches (
    id uuid PRIMARY KEY,
    owner text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    request_id text,
    total_jobs integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX batches_owner_request_id_v1 ON jobs.batches (owner, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX batches_owner_v1 ON jobs.batches (owner);

CREATE TABLE jobs.jobs (
    id uuid PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    type text NOT NULL,
    owner text NOT NULL,
    state text NOT NULL CHECK (state IN
        ('queued', 'scheduled', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    priority integer NOT NULL DEFAULT 0,
    payload jsonb NOT NULL DEFAULT '{}',
    files text[] NOT NULL DEFAULT '{}',
    batch_id uuid REFERENCES jobs.batches (id) ON DELETE CASCADE,
    request_id text,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    available_at timestamptz NOT NULL DEFAULT now(),
    lease_id uuid,
    lease_expires_at timestamptz,
    worker_id text,
    progress_percent real NOT NULL DEFAULT 0,
    progress_message text NOT NULL DEFAULT '',
    result jsonb,
    error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_running_has_lease CHECK ((state = 'running') = (lease_id IS NOT NULL)),
    CONSTRAINT jobs_finished_has_time CHECK
        ((state IN ('succeeded', 'failed', 'dead', 'cancelled')) = (finished_at IS NOT NULL))
);

-- Claim order: priority, then age; only claimable rows are indexed.
CREATE INDEX jobs_claim_v1 ON jobs.jobs (priority DESC, available_at, seq)
    WHERE state IN ('queued', 'scheduled');
-- Queue position and per-type depth: same order, per type.
CREATE INDEX jobs_claim_by_type_v1 ON jobs.jobs (type, priority DESC, available_at, seq)
    WHERE state IN ('queued', 'scheduled');
-- The reaper finds expired leases.
CREATE INDEX jobs_lease_expiry_v1 ON jobs.jobs (lease_expires_at) WHERE state = 'running';
-- Retention and throughput windows.
CREATE INDEX jobs_finished_v1 ON jobs.jobs (finished_at)
    WHERE state IN ('succeeded', 'failed', 'dead', 'cancelled');
-- Listing (owner's and everyone's, newest first) and per-owner counts.
CREATE INDEX jobs_owner_created_v1 ON jobs.jobs (owner, created_at DESC, id DESC);
CREATE INDEX jobs_created_v1 ON jobs.jobs (created_at DESC, id DESC);
CREATE INDEX jobs_batch_v1 ON jobs.jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE UNIQUE INDEX jobs_owner_request_id_v1 ON jobs.jobs (owner, request_id)
    WHERE request_id IS NOT NULL;
