-- Scripts as building blocks. A script is a name and its revisions; every change (body, inputs,
-- packages, an attachment) is a new immutable revision, and an action names the revision it ran.
CREATE TABLE scripts (
    name       TEXT PRIMARY KEY,
    head       INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE script_revisions (
    script      TEXT NOT NULL REFERENCES scripts (name) ON DELETE CASCADE,
    revision    INTEGER NOT NULL,
    body        TEXT NOT NULL,
    description TEXT,
    inputs      JSONB NOT NULL DEFAULT '[]'::jsonb,
    packages    JSONB NOT NULL DEFAULT '[]'::jsonb,
    -- [{file, sha256, size, blob}]: the content is the `blobs` row `blob`.
    attachments JSONB NOT NULL DEFAULT '[]'::jsonb,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (script, revision)
);

-- Attachment content: in the backup bucket (`object_key`) or, without one, here in 1 MiB
-- chunks. Revisions name a blob by id and record its sha256, checked on every shipment.
CREATE TABLE blobs (
    id         BIGSERIAL PRIMARY KEY,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    object_key TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE blob_chunks (
    blob_id BIGINT NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (blob_id, seq)
);

-- Server templates: ordered lists of script references (boot, operational, decommission) and
-- input values, revisioned like scripts.
CREATE TABLE templates (
    name       TEXT PRIMARY KEY,
    head       INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE template_revisions (
    template     TEXT NOT NULL REFERENCES templates (name) ON DELETE CASCADE,
    revision     INTEGER NOT NULL,
    spec         JSONB NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (template, revision)
);

CREATE TABLE deployments (
    name       TEXT PRIMARY KEY,
    inputs     JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE servers ADD COLUMN template TEXT REFERENCES templates (name);
ALTER TABLE servers ADD COLUMN deployment TEXT REFERENCES deployments (name);
ALTER TABLE servers ADD COLUMN inputs JSONB NOT NULL DEFAULT '{}'::jsonb;

-- Runs across a fleet: one action per server, grouped. Actions beyond the run's concurrency
-- wait as `held` (not queued, not published, no server's head) until a slot frees.
CREATE TABLE runs (
    id               BIGSERIAL PRIMARY KEY,
    target           JSONB NOT NULL,
    kind             TEXT NOT NULL,
    params           JSONB NOT NULL,
    concurrency      INTEGER NOT NULL,
    max_failures     INTEGER,
    max_fail_percent INTEGER,
    total            INTEGER NOT NULL,
    stopped_reason   TEXT,
    submitted_by     TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at      TIMESTAMPTZ
);

ALTER TABLE actions ADD COLUMN run_id BIGINT REFERENCES runs (id);
CREATE INDEX actions_run ON actions (run_id, status) WHERE run_id IS NOT NULL;
ALTER TABLE actions DROP CONSTRAINT actions_status_check;
ALTER TABLE actions ADD CONSTRAINT actions_status_check
    CHECK (status IN ('held','queued','waiting','running','succeeded','failed','cancelled','timed_out','interrupted'));
