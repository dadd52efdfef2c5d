-- DB clusters: a master, its slaves, the replication account, and the master's DNS record (kept
-- here and served by the API: the built-in DNS provider).
CREATE TABLE clusters (
    name           TEXT PRIMARY KEY,
    master         TEXT,
    repl_user      TEXT NOT NULL DEFAULT 'sa_repl',
    -- Generated; a secret: never returned by the API or written to a log.
    repl_password  TEXT NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', ''),
    dns_name       TEXT NOT NULL,
    dns_address    TEXT,
    dns_ttl        INTEGER NOT NULL DEFAULT 60,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE servers ADD COLUMN cluster TEXT;
ALTER TABLE servers ADD COLUMN db_role TEXT CHECK (db_role IN ('master', 'slave'));
