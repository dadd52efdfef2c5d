-- MySQL/MariaDB actions: where mysqld listens as seen from the server itself (the worker reaches
-- it through a port forwarded over SSH), and what an action found out (db_status...).
ALTER TABLE servers ADD COLUMN db_host TEXT;
ALTER TABLE actions ADD COLUMN result JSONB;
