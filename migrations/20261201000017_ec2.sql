-- Servers launched on EC2. A launch profile is what a new instance is made from (image, type,
-- subnet, security groups, the login user, how mysqld runs there), kept as one typed document.
CREATE TABLE launch_profiles (
    name       TEXT PRIMARY KEY,
    spec       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A server's lifecycle: `registered` (added by hand: the workers take it as it is), or a
-- launched one: `launching` → `running` (its host key pinned, SSH answering with it) →
-- `stopped` (fenced) | `terminated`; `launch_failed` when the launch gave up.
ALTER TABLE servers ADD COLUMN state TEXT NOT NULL DEFAULT 'registered'
    CHECK (state IN ('registered', 'launching', 'running', 'launch_failed', 'stopped', 'terminated'));
-- The instance id at the provider, once the launch has made it.
ALTER TABLE servers ADD COLUMN instance_id TEXT;
ALTER TABLE servers ADD COLUMN launch_profile TEXT;

-- The profile a cluster's new members are launched from (db_launch_slave, db_launch_master).
ALTER TABLE clusters ADD COLUMN launch_profile TEXT;
