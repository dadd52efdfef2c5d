-- Automatic failover: which clusters the workers watch, the watcher's lease and what it saw,
-- the anti-flapping block, and the global switch.

-- Watched by a worker, and failed over automatically when its master is dead.
ALTER TABLE clusters ADD COLUMN auto_failover BOOLEAN NOT NULL DEFAULT false;
-- After an automatic failover, no second one on the cluster for this long unless acknowledged.
ALTER TABLE clusters ADD COLUMN failover_block_s INTEGER NOT NULL DEFAULT 3600
    CHECK (failover_block_s BETWEEN 0 AND 604800);
-- When the watcher last submitted an automatic failover, and when an operator acknowledged it.
ALTER TABLE clusters ADD COLUMN last_failover_at TIMESTAMPTZ;
ALTER TABLE clusters ADD COLUMN failover_acked_at TIMESTAMPTZ;
ALTER TABLE clusters ADD COLUMN failover_acked_by TEXT;

-- One watcher per cluster: the worker holding this lease (renewed every probe). Another worker
-- takes it once it has expired, with the next generation; the failover is submitted only under
-- the generation that holds it, so exactly one watcher acts.
CREATE TABLE cluster_watch (
    cluster        TEXT PRIMARY KEY REFERENCES clusters (name) ON DELETE CASCADE,
    worker         TEXT NOT NULL,
    generation     BIGINT NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    -- The current analysis (`ok`, `dead_master`, `unreachable_master_slaves_connected`, ...),
    -- in words, and since when it holds.
    analysis       TEXT,
    detail         TEXT,
    analysis_since TIMESTAMPTZ,
    -- What a failover would do now (the dry run of GET /v1/clusters/{name}/failover-plan).
    plan           JSONB,
    observed_at    TIMESTAMPTZ
);

-- Switches that apply to every cluster (`auto_failover`: {"enabled": bool, "reason": text}).
CREATE TABLE settings (
    name        TEXT PRIMARY KEY,
    value       JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by  TEXT NOT NULL
);

-- Semi-synchronous replication: the master acknowledges a commit only once a slave has it
-- (MariaDB's built-in rpl_semi_sync_*, wait point AFTER_SYNC), so a failover loses no write
-- the master acknowledged. Set by every promote and kept by the cluster's watcher.
ALTER TABLE clusters ADD COLUMN semi_sync BOOLEAN NOT NULL DEFAULT false;
