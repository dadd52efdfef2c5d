-- Every worker's fencer looks for fenced-pending servers each second: only those rows.
CREATE INDEX servers_fenced_pending ON servers (name) WHERE fenced_pending IS NOT NULL;
