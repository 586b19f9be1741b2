-- When the last owner's command (stop, start, delete) carried out on a
-- container was sent (its created_at, unix s): an older one that arrives
-- later (delayed on a relay, or replayed after a restart) is refused, so it
-- never undoes a newer one.
ALTER TABLE containers ADD COLUMN command_at INTEGER NOT NULL DEFAULT 0;
