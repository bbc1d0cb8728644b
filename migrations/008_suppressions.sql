-- Bounces and complaints reported by the email providers (issue 27), and the addresses errand no longer emails.

-- Every bounce or complaint once: a provider delivering the same event again (its retry, a replay) finds its key
-- taken and changes nothing. Addresses are stored lower-cased, so matching ignores case. Events errand does not act
-- on (deliveries, opens, …) are not stored.
CREATE TABLE email_events (
  provider text NOT NULL,
  event_id text NOT NULL,
  email text NOT NULL CHECK (email = lower(email)),
  kind text NOT NULL CHECK (kind IN ('hard_bounce', 'soft_bounce', 'complaint')),
  occurred_at timestamptz NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (provider, event_id)
);
-- The soft-bounce count of one address within the window.
CREATE INDEX email_events_soft_bounces ON email_events (email, occurred_at) WHERE kind = 'soft_bounce';
CREATE INDEX email_events_received_at ON email_events (received_at);

-- The suppression list: one row per address (lower-cased), looked up before every send.
CREATE TABLE suppressions (
  email text PRIMARY KEY CHECK (email = lower(email)),
  reason text NOT NULL CHECK (reason IN ('hard-bounce', 'complaint', 'soft-bounces', 'manual')),
  -- The provider whose event suppressed it, or 'admin'.
  source text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- GET /admin/suppressions: newest first, keyset pagination on (created_at, email).
CREATE INDEX suppressions_created_at ON suppressions (created_at DESC, email DESC);

-- When a suppression was last lifted: soft bounces before it no longer count, so the count starts afresh.
CREATE TABLE suppression_lifts (
  email text PRIMARY KEY CHECK (email = lower(email)),
  lifted_at timestamptz NOT NULL DEFAULT now()
);

-- Mailgun webhook tokens already seen: a token is good for one delivery. Kept a little beyond the 300 s in which a
-- signed timestamp is accepted, after which the timestamp check refuses the delivery anyway.
CREATE TABLE email_webhook_tokens (
  provider text NOT NULL,
  token text NOT NULL,
  signed_at timestamptz NOT NULL,
  PRIMARY KEY (provider, token)
);
CREATE INDEX email_webhook_tokens_signed_at ON email_webhook_tokens (signed_at);
