-- Who asked for each invoice (hex pubkey: a quote's owner, a top-up's
-- sender, a zap's sender; '' when unknown), to tell them about a payment
-- that came too late; and when an open invoice was cancelled at the node
-- because its container was removed.
ALTER TABLE invoices ADD COLUMN requester TEXT NOT NULL DEFAULT '';
ALTER TABLE invoices ADD COLUMN cancelled_at INTEGER; -- unix s
CREATE INDEX invoices_open ON invoices (container_id) WHERE settled_at IS NULL AND cancelled_at IS NULL;

-- Payments that settled for a container already removed (a payer raced its
-- removal): never credited to anything, never silently kept. The operator
-- sees them (enclaved audit) and the payer, when known, is told.
CREATE TABLE unclaimed (
	payment_hash TEXT PRIMARY KEY,
	container_id TEXT NOT NULL REFERENCES containers (id),
	amount_msat  INTEGER NOT NULL CHECK (amount_msat > 0),
	requester    TEXT NOT NULL DEFAULT '',
	at           INTEGER NOT NULL -- unix ms
) STRICT;
