-- Schedules (issue 6): each slot fires at most once, whatever the number of api replicas: a
-- due schedule is taken with FOR UPDATE SKIP LOCKED, its run recorded under the unique key
-- (schedule, slot), and its next slot moved past now in the same transaction.
CREATE TABLE schedules (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    target_server  text,
    target_cluster text,
    target_role    text CHECK (target_role IN ('master', 'slave')),
    kind           text NOT NULL,
    params         jsonb NOT NULL DEFAULT '{}',
    cron           text,
    every_s        integer CHECK (every_s > 0),
    jitter_s       integer NOT NULL DEFAULT 0 CHECK (jitter_s >= 0),
    enabled        boolean NOT NULL DEFAULT true,
    catch_up       text NOT NULL DEFAULT 'once' CHECK (catch_up IN ('once', 'skip')),
    next_slot      timestamptz NOT NULL,
    next_fire_at   timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every_s IS NULL)),
    CHECK ((target_server IS NULL) <> (target_cluster IS NULL)),
    CHECK ((target_cluster IS NULL) = (target_role IS NULL))
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;

CREATE TABLE schedule_runs (
    schedule_id bigint NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    slot        timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('fired', 'skipped')),
    action_id   bigint,
    reason      text,
    fired_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (schedule_id, slot)
);

ALTER TABLE actions ADD COLUMN schedule_id bigint;
CREATE INDEX actions_open_by_schedule ON actions (schedule_id)
    WHERE schedule_id IS NOT NULL AND status IN ('queued', 'waiting', 'running');
