-- A lease kept after its action could not be stopped: the server stays locked (it never
-- expires: 9999-12-31) until an operator unlocks it. `stuck` says why.
ALTER TABLE server_leases ADD COLUMN stuck TEXT;

-- Per-server database credentials: a user, and the name of a stored secret holding its
-- password (SA_MYSQL_USER / SA_MYSQL_PASSWORD stay the default).
ALTER TABLE servers ADD COLUMN db_user TEXT,
                    ADD COLUMN db_password_ref TEXT;
