-- containers: one row per rented container, from quote to removal.
CREATE TABLE containers (
	id            TEXT PRIMARY KEY,          -- random hex; Docker label enclaved.id
	name          TEXT NOT NULL UNIQUE,
	owner         TEXT NOT NULL,             -- renter's hex pubkey
	channel       TEXT NOT NULL,             -- nip17, nip04 or mention: how the owner is told things
	image         TEXT NOT NULL,             -- as the renter wrote it
	image_ref     TEXT NOT NULL,             -- repository@sha256:... (linux/amd64 manifest)
	image_size    INTEGER NOT NULL,          -- compressed bytes
	image_volumes INTEGER NOT NULL DEFAULT 0, -- the image declares VOLUMEs (keeps a writable root)
	units         INTEGER NOT NULL CHECK (units > 0),
	price_msat    INTEGER NOT NULL CHECK (price_msat >= 0), -- per unit-hour, fixed at quote time
	env           TEXT NOT NULL DEFAULT '[]',               -- JSON [[k,v],...]; private
	state         TEXT NOT NULL,
	state_reason  TEXT NOT NULL DEFAULT '',
	balance_msat  INTEGER NOT NULL DEFAULT 0 CHECK (balance_msat >= 0),
	run_ms        INTEGER NOT NULL DEFAULT 0, -- running time metered so far
	charged_msat  INTEGER NOT NULL DEFAULT 0, -- sum of debits = floor(rate * run_ms)
	running_since INTEGER,                    -- unix ms of the start of the unmetered stretch, NULL unless running
	paused_at     INTEGER,                    -- unix ms; retention counts from here
	low_notified  INTEGER NOT NULL DEFAULT 0, -- low-balance DM sent for this stretch
	docker_id     TEXT NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX containers_owner ON containers (owner);
CREATE INDEX containers_state ON containers (state);

-- invoices the instance issued; payment_hash is hex.
CREATE TABLE invoices (
	payment_hash TEXT PRIMARY KEY,
	container_id TEXT NOT NULL REFERENCES containers (id),
	purpose      TEXT NOT NULL,              -- deploy, topup, zap
	amount_msat  INTEGER NOT NULL CHECK (amount_msat > 0),
	bolt11       TEXT NOT NULL,
	expires_at   INTEGER NOT NULL,           -- unix s
	created_at   INTEGER NOT NULL,
	settled_at   INTEGER                     -- unix s
) STRICT;

-- ledger: every credit and debit, never updated. A credit is keyed by its
-- payment hash, so a settlement seen twice is applied once.
CREATE TABLE ledger (
	id           INTEGER PRIMARY KEY,
	container_id TEXT NOT NULL REFERENCES containers (id),
	kind         TEXT NOT NULL CHECK (kind IN ('credit', 'debit')),
	amount_msat  INTEGER NOT NULL CHECK (amount_msat > 0),
	payment_hash TEXT UNIQUE,
	from_ms      INTEGER,                    -- debits: metered interval
	to_ms        INTEGER,
	at           INTEGER NOT NULL,           -- unix ms
	CHECK ((kind = 'credit') = (payment_hash IS NOT NULL))
) STRICT;
CREATE INDEX ledger_container ON ledger (container_id);

-- events the bot has handled (gift wraps and rumors, DMs, mentions), so a
-- command is answered once across relays and restarts.
CREATE TABLE seen_events (
	id TEXT PRIMARY KEY,
	at INTEGER NOT NULL
) STRICT;
