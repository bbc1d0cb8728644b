-- "A tracking email was queued for this order", on the order itself: set by the settle statement that makes the
-- order paid (in the statement that writes the outbox row) and by the tracking-links backfill. Retention prunes
-- published outbox rows and sent-email records, which the backfill used to tell "sent" from "never queued": an
-- order paid and emailed more than RETENTION_DAYS ago got a second email.
ALTER TABLE orders ADD COLUMN tracking_email_queued_at timestamptz;

-- Existing rows: every order already paid. The settle statement has always written the tracking outbox row in the
-- statement that made an order paid, so a paid order without one is almost always one whose row retention already
-- pruned (exactly the orders that must not get a second email); the only exception, an order set to paid by hand
-- in the database before this migration, is left to the operator (set the column back to null, then backfill).
UPDATE orders SET tracking_email_queued_at = coalesce(paid_at, updated_at) WHERE status = 'paid';

-- The Message-ID the accepted message carried (derived from the job id, the same on every attempt of one job), so a
-- repeat after a crash between SMTP acceptance and this record can be matched to the first. Null for older rows.
ALTER TABLE sent_emails ADD COLUMN message_id text;
