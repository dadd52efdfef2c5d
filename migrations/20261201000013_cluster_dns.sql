-- A cluster's own DNS provider for its master record (NULL: the workers' SA_DNS_PROVIDER). For
-- `rfc2136`: the authoritative server (host:port), the zone, and the TSIG key's name and the
-- stored secret holding its base64 value; for `route53`: the hosted zone id in dns_zone, and
-- optionally an access key id (dns_key_name) with its secret key (dns_key_ref).
ALTER TABLE clusters ADD COLUMN dns_provider TEXT CHECK (dns_provider IN ('store', 'rfc2136', 'route53'));
ALTER TABLE clusters ADD COLUMN dns_zone TEXT;
ALTER TABLE clusters ADD COLUMN dns_server TEXT;
ALTER TABLE clusters ADD COLUMN dns_key_name TEXT;
ALTER TABLE clusters ADD COLUMN dns_key_ref TEXT;

-- A master record's TTL is how long clients may keep a dead master's address: 30 s by default.
ALTER TABLE clusters ALTER COLUMN dns_ttl SET DEFAULT 30;
