-- Backups (issue 5): one row per backup object in S3, `uncommitted` until the upload and the
-- manifest are complete. Only committed backups are restored or counted.
CREATE TABLE backups (
    id            bigserial PRIMARY KEY,
    lineage       text NOT NULL,
    cluster       text,
    server        text NOT NULL,
    strategy      text NOT NULL CHECK (strategy IN ('snapshot', 'mariabackup', 'logical')),
    tag           text,
    status        text NOT NULL DEFAULT 'uncommitted' CHECK (status IN ('uncommitted', 'committed')),
    action_id     bigint,
    object_key    text NOT NULL,
    compression   text NOT NULL,
    bytes         bigint,
    sha256        text,
    gtid          text,
    manifest      jsonb,
    verified      text CHECK (verified IN ('good', 'bad')),
    verify_note   text,
    verified_at   timestamptz,
    started_at    timestamptz NOT NULL DEFAULT now(),
    committed_at  timestamptz
);
CREATE INDEX backups_lineage ON backups (lineage, status, committed_at DESC);

-- Where mysqld keeps its data on a server and how to stop, start and snapshot it.
ALTER TABLE servers
    ADD COLUMN db_datadir text,
    ADD COLUMN db_stop_command text,
    ADD COLUMN db_start_command text,
    ADD COLUMN db_snapshot_command text,
    ADD COLUMN db_snapshot_cleanup_command text;
