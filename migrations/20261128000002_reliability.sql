-- Reliability: retries (attempt, not_before), cancel requests for running actions.
ALTER TABLE actions ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE actions ADD COLUMN not_before TIMESTAMPTZ;
-- Why a running action was asked to stop ("Cancelled by request", "Preempted by urgent action N");
-- the worker running it is told through NOTIFY sa_cancel and re-reads it with each heartbeat.
ALTER TABLE actions ADD COLUMN cancel_requested TEXT;
