CREATE TABLE users (
  id bigserial PRIMARY KEY,
  email text NOT NULL UNIQUE,
  name text,
  verified_at timestamptz,
  -- last time a verification email was queued: the 60 s per-address throttle
  verification_requested_at timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE email_verification_tokens (
  -- SHA-256 of the raw token; the raw value only ever exists inside the email
  token_hash bytea PRIMARY KEY,
  user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_verification_tokens_user ON email_verification_tokens (user_id);

CREATE TABLE outbox (
  id bigserial PRIMARY KEY,
  queue text NOT NULL,
  job_name text NOT NULL,
  payload jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- One row per email job whose message the SMTP server accepted: a retried or
-- re-published job finds it and does not send twice.
CREATE TABLE sent_emails (
  job_id text PRIMARY KEY,
  sent_at timestamptz NOT NULL DEFAULT now()
);
