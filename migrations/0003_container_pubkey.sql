-- Each container's own Nostr identity: the public half of the key derived
-- from the instance key and the container id (enclave.Key.ContainerKey).
-- Stored only to look containers up by npub; the secret is never stored.
ALTER TABLE containers ADD COLUMN pubkey TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX containers_pubkey ON containers (pubkey) WHERE pubkey != '';
