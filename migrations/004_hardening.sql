-- Poison rows: the relay counts failed passes per row (only while Redis is up) and skips a row
-- after OUTBOX_MAX_FAILURES, so one row that can never be published does not hold up the rest.
ALTER TABLE outbox ADD COLUMN failures integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error text;

-- The 60 s signup throttle per address with any +tag removed from the local part
-- (victim+1@x and victim+2@x share one row), alongside the per-address one on users.
CREATE TABLE signup_throttle (
  address_key text PRIMARY KEY,
  last_queued_at timestamptz NOT NULL DEFAULT now()
);

-- Retention deletes by age in batches: published outbox rows, sent emails, webhook event ids.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX sent_emails_sent_at ON sent_emails (sent_at);
CREATE INDEX payment_events_received_at ON payment_events (received_at);
CREATE INDEX signup_throttle_last_queued_at ON signup_throttle (last_queued_at);
