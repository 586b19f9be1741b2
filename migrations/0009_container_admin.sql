-- Whether the owner agreed at deploy (admin=yes) to be named as the
-- container's admin in its public status events (upstream's
-- `p <owner> admin` tag). Off by default: an owner's pubkey is otherwise
-- private.
ALTER TABLE containers ADD COLUMN admin_public INTEGER NOT NULL DEFAULT 0;
