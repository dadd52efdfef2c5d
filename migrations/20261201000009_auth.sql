-- API tokens: only a hash of the secret is kept (SHA-256 of a 256-bit random value). Roles
-- include each other in order: viewer < operator < dba < admin. A token with any scope list
-- non-empty reaches only the servers those lists cover (by name, by tag, or by cluster).
CREATE TABLE tokens (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    hash          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'dba', 'admin')),
    servers       TEXT[] NOT NULL DEFAULT '{}',
    tags          JSONB NOT NULL DEFAULT '{}',
    clusters      TEXT[] NOT NULL DEFAULT '{}',
    created_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);

-- One row per mutating request, accepted or refused. An accepted one is written in the same
-- transaction as its effect.
CREATE TABLE audit (
    id           BIGSERIAL PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    token_id     BIGINT,
    token_name   TEXT,
    client_addr  TEXT NOT NULL,
    method       TEXT NOT NULL,
    route        TEXT NOT NULL,
    target       TEXT,
    status       INTEGER NOT NULL,
    changes      JSONB
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_target ON audit (target, id);

-- Who asked for an action: `token:<name>`, `schedule:<name>`, `system:<reason>`.
ALTER TABLE actions ADD COLUMN submitted_by TEXT NOT NULL DEFAULT 'unknown';
