-- Secret values, sealed with AES-256-GCM (the key is in SA_SECRET_KEY_FILE, never here).
-- The named store: `{"secret_ref": NAME}` wherever a secret value is accepted.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- An action's own secret values, kept only while it may still run.
CREATE TABLE action_secrets (
    action_id   BIGINT NOT NULL REFERENCES actions (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    PRIMARY KEY (action_id, name)
);

-- A value sealed with the key at first use: a start with another key is refused.
CREATE TABLE secret_key_check (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL
);

-- Whatever ends an action (finish, cancel, reaper) wipes its secret values.
CREATE FUNCTION wipe_action_secrets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM action_secrets WHERE action_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER actions_wipe_secrets AFTER UPDATE OF status ON actions FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled', 'timed_out', 'interrupted'))
    EXECUTE FUNCTION wipe_action_secrets();
