-- What a container may reach and what it serves: the hosts its renter asked
-- for at deploy time (JSON array of "host:port", within the operator's
-- policy; empty: no egress), and its HTTP port, served by host name at
-- https://NAME.<instance host> (0: none).
ALTER TABLE containers ADD COLUMN egress TEXT NOT NULL DEFAULT '[]';
ALTER TABLE containers ADD COLUMN http_port INTEGER NOT NULL DEFAULT 0;
