-- A backup is stored as a series of chunk objects, `<object_key>.000001`...: how many. NULL for
-- backups made before chunks, stored as the one object `object_key`.
ALTER TABLE backups ADD COLUMN chunks integer CHECK (chunks > 0);
