-- Topology safety: a cluster-level lock for topology changes, fencing, and what the workers last
-- saw of each slave.

-- The cluster lock: held by one topology action at a time, alive as long as that action's server
-- lease (same generation) exists, so it needs no heartbeat of its own and dies with its holder.
-- `generation` fences: the cluster's master changes only under the generation that holds it.
CREATE TABLE cluster_leases (
    cluster            TEXT PRIMARY KEY,
    action_id          BIGINT NOT NULL,
    server             TEXT NOT NULL,
    server_generation  BIGINT NOT NULL,
    generation         BIGINT NOT NULL,
    acquired_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- `required`: a promote over a dead master runs its fence command (and it must succeed) before
-- the new master takes writes; `optional`: it is tried, a failure is logged.
ALTER TABLE clusters ADD COLUMN fence TEXT NOT NULL DEFAULT 'required'
    CHECK (fence IN ('required', 'optional'));

-- Run from the worker to fence this server when it is a dead master (e.g. stop its instance).
ALTER TABLE servers ADD COLUMN db_fence_command TEXT;
-- Which slave a cluster-level promote prefers among equally advanced ones.
ALTER TABLE servers ADD COLUMN promotion_rule TEXT NOT NULL DEFAULT 'neutral'
    CHECK (promotion_rule IN ('prefer', 'neutral', 'must_not'));
-- An old master that could not be made read-only (it was unreachable): the sweeper does it as
-- soon as it answers again. Why, and since when.
ALTER TABLE servers ADD COLUMN fenced_pending TEXT;
-- A member out of service (an unreachable slave not repointed, an old master): why. Cleared by
-- db_configure_slave.
ALTER TABLE servers ADD COLUMN detached TEXT;
-- What a worker last saw of its replication (threads, lag, GTIDs, last error), and when.
ALTER TABLE servers ADD COLUMN repl_state JSONB;
ALTER TABLE servers ADD COLUMN repl_state_at TIMESTAMPTZ;

-- What happened to a cluster (promotes, fencing, detached slaves): its timeline.
CREATE TABLE cluster_events (
    id         BIGSERIAL PRIMARY KEY,
    cluster    TEXT NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    action_id  BIGINT,
    message    TEXT NOT NULL
);
CREATE INDEX cluster_events_cluster ON cluster_events (cluster, id DESC);
