-- Zaps (NIP-57) and plain LNURL-pay top-ups. Invoice purposes gain 'zap'
-- (with a zap request) and 'lnurl' (without).
ALTER TABLE invoices ADD COLUMN zap_request TEXT;  -- the kind-9734 JSON exactly as received
ALTER TABLE invoices ADD COLUMN preimage TEXT;     -- hex, once settled (public by then)
ALTER TABLE invoices ADD COLUMN receipt_id TEXT;   -- the kind-9735 event id, once published
CREATE INDEX invoices_pending_receipts ON invoices (settled_at)
	WHERE purpose = 'zap' AND settled_at IS NOT NULL AND receipt_id IS NULL;
