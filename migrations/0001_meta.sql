-- meta holds facts about this database itself, such as which instance key it
-- belongs to, so that a data directory is never opened by another instance.
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;
