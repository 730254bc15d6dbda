-- 0004 the claim's own index: due realms are claimed longest-waiting first, the one claimed
-- longest ago (never claimed: first), ORDER BY claimed_at NULLS FIRST, realm_id ... LIMIT n FOR
-- UPDATE SKIP LOCKED. A claim moves its realms to the end of that order, so with this index each
-- claim reads the first due rows and stops, instead of sorting every realm.
--
-- Idempotent: created only if missing.

CREATE INDEX IF NOT EXISTS quickbooks_realm_leases_claim_order_idx ON quickbooks_realm_leases (claimed_at NULLS FIRST, realm_id);
