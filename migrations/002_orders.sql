-- gen_random_uuid() is built in from PostgreSQL 13.
CREATE TABLE orders (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- the buyer's address, only ever read by the tracking-email composer
  email text NOT NULL,
  -- minor units (cents)
  amount bigint NOT NULL CHECK (amount > 0),
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  -- pending -> paid | failed | expired; the three outcomes are final
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'failed', 'expired')),
  provider_ref text NOT NULL UNIQUE,
  paid_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- The reconciliation sweep: pending orders created in the last N hours, oldest first.
CREATE INDEX orders_pending_by_created_at ON orders (created_at) WHERE status = 'pending';

-- One row per webhook event applied: a replayed event id finds its row and changes nothing.
CREATE TABLE payment_events (
  event_id text PRIMARY KEY,
  type text NOT NULL,
  provider_ref text NOT NULL,
  -- null when the providerRef matched no order
  order_id uuid REFERENCES orders (id),
  -- whether this event moved its order out of pending
  transitioned boolean NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_events_order ON payment_events (order_id);
