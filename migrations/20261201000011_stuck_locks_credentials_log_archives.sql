-- A lease kept after its action could not be stopped: the server stays locked (it never
-- expires: 9999-12-31) until an operator unlocks it. `stuck` says why.
ALTER TABLE server_leases ADD COLUMN stuck TEXT;

-- Per-server database credentials: a user, and the name of a stored secret holding its
-- password (SA_MYSQL_USER / SA_MYSQL_PASSWORD stay the default).
ALTER TABLE servers ADD COLUMN db_user TEXT,
                    ADD COLUMN db_password_ref TEXT;

-- Action logs older than SA_LOG_RETENTION_DAYS live in the backup bucket: one row per
-- archived log (claimed by a worker, then done), and a flag on the action that the partial
-- index keeps cheap to find the next ones by.
CREATE TABLE action_log_archives (
    action_id   BIGINT PRIMARY KEY,
    object_key  TEXT NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    done_at     TIMESTAMPTZ,
    chunks      INTEGER NOT NULL DEFAULT 0,
    lines       INTEGER NOT NULL DEFAULT 0,
    bytes       BIGINT NOT NULL DEFAULT 0
);
ALTER TABLE actions ADD COLUMN log_archived BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX actions_log_due ON actions (finished_at) WHERE NOT log_archived AND finished_at IS NOT NULL;

-- GET /v1/actions?kind=K over millions of actions: newest first without a scan.
CREATE INDEX actions_kind_id ON actions (kind, id DESC);
