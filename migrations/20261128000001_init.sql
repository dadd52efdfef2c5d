-- ServerActions control plane: servers, actions (with outbox state), action log lines, server leases.

CREATE TABLE servers (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    address     TEXT NOT NULL,
    ssh_port    INTEGER NOT NULL DEFAULT 22,
    ssh_user    TEXT NOT NULL,
    host_key    TEXT,
    db_port     INTEGER NOT NULL DEFAULT 3306,
    tags        JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE actions (
    id               BIGSERIAL PRIMARY KEY,
    server           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    params           JSONB NOT NULL DEFAULT '{}'::jsonb,
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued','waiting','running','succeeded','failed','cancelled','timed_out','interrupted')),
    exit_code        INTEGER,
    error            TEXT,
    timeout_s        INTEGER,
    urgent           BOOLEAN NOT NULL DEFAULT false,
    idempotency_key  TEXT UNIQUE,
    retry            JSONB,
    worker           TEXT,
    waiting_on       BIGINT,
    published_at     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX actions_server_pending ON actions (server, id) WHERE status IN ('queued','waiting');
CREATE INDEX actions_server_id ON actions (server, id DESC);
CREATE INDEX actions_status_id ON actions (status, id DESC);
CREATE INDEX actions_unpublished ON actions (id) WHERE published_at IS NULL;

-- No foreign key to actions: a per-row RI check would triple the cost of storing large outputs;
-- actions are never deleted.
CREATE TABLE action_log (
    action_id  BIGINT NOT NULL,
    seq        INTEGER NOT NULL,
    ts         TIMESTAMPTZ NOT NULL,
    stream     SMALLINT NOT NULL, -- 0 system, 1 stdout, 2 stderr
    line       TEXT NOT NULL,
    PRIMARY KEY (action_id, seq)
);

-- One row per locked server: the lease. `generation` is the fencing token.
CREATE TABLE server_leases (
    server       TEXT PRIMARY KEY,
    action_id    BIGINT NOT NULL,
    holder       TEXT NOT NULL,
    generation   BIGINT NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE SEQUENCE lease_generation;
