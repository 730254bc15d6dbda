-- 0002 alert kinds: quickbooks_throttled (consecutive 429s: a warning of its own, not an outage),
-- and two about the monitor itself: monitor_stalled (a connected realm without a result for 3
-- schedule periods) and monitor_instance_down (a fleet member that stopped heartbeating).
--
-- Idempotent: the kind check is replaced by name, whatever the earlier one allowed.

ALTER TABLE quickbooks_alert_state DROP CONSTRAINT IF EXISTS quickbooks_alert_state_kind_check;
ALTER TABLE quickbooks_alert_state ADD CONSTRAINT quickbooks_alert_state_kind_check
  CHECK (kind IN ('quickbooks_api', 'quickbooks_auth', 'database', 'schema', 'refresh_token_expiry',
                  'quickbooks_throttled', 'monitor_stalled', 'monitor_instance_down'));
