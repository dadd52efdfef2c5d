-- How a worker reconfigures and restarts a server's mysqld (NULL: the Debian defaults, see
-- worker/src/mycnf.rs).
ALTER TABLE servers
    ADD COLUMN db_config_file text,
    ADD COLUMN db_restart_command text;
