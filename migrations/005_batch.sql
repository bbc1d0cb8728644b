-- Batch jobs (queue `batch`): one row per job, keyed by its BullMQ job id. The
-- checkpoint columns are written in the same transaction as the chunk they
-- cover, so a job resumed by another worker goes on exactly where the last
-- committed chunk ended.
CREATE TABLE batch_jobs (
  job_id text PRIMARY KEY,
  -- orders-export | users-import | tracking-links-backfill
  kind text NOT NULL,
  -- the job's parameters as first run (an export also pins its snapshot time here)
  params jsonb NOT NULL DEFAULT '{}',
  -- last key written (export and backfill: {createdAt|paidAt, id}); null before the first chunk
  cursor jsonb,
  chunks_done integer NOT NULL DEFAULT 0,
  rows_done bigint NOT NULL DEFAULT 0,
  bytes_done bigint NOT NULL DEFAULT 0,
  -- rows to do in all, when known (progress)
  total bigint,
  -- per-kind tallies, e.g. {created, existing, invalid}
  counts jsonb NOT NULL DEFAULT '{}',
  -- set by POST /admin/jobs/batch/:id/cancel; the next checkpoint refuses to commit once it is set
  cancel_requested_at timestamptz,
  cancelled_at timestamptz,
  finished_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Retention: every checkpoint bumps updated_at, so a job untouched for RETENTION_DAYS
-- is finished, cancelled or abandoned (failed for good), and its files can go.
CREATE INDEX batch_jobs_updated_at ON batch_jobs (updated_at);

-- An export's output, in order; GET /admin/exports/:jobId/file concatenates them.
CREATE TABLE batch_export_chunks (
  job_id text NOT NULL REFERENCES batch_jobs (job_id) ON DELETE CASCADE,
  seq integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (job_id, seq)
);

-- An import's upload, stored as received (before the 202), in order.
CREATE TABLE batch_import_chunks (
  job_id text NOT NULL REFERENCES batch_jobs (job_id) ON DELETE CASCADE,
  seq integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (job_id, seq)
);

-- Rejected import rows: GET /admin/imports/:jobId/errors.
CREATE TABLE batch_import_errors (
  job_id text NOT NULL REFERENCES batch_jobs (job_id) ON DELETE CASCADE,
  line bigint NOT NULL,
  reason text NOT NULL,
  PRIMARY KEY (job_id, line)
);

-- One row per order whose tracking email a backfill queued: however often a
-- backfill runs (or how many run at once), an order gets at most one.
CREATE TABLE tracking_link_backfills (
  order_id uuid PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
  outbox_id bigint NOT NULL,
  job_id text NOT NULL,
  queued_at timestamptz NOT NULL DEFAULT now()
);

-- Export keyset order (created_at, id); backfill keyset over paid orders.
CREATE INDEX orders_created_at_id ON orders (created_at, id);
CREATE INDEX orders_paid_at_id ON orders (paid_at, id) WHERE status = 'paid';
-- The backfill asks, per order, whether a tracking email was ever queued for it.
CREATE INDEX outbox_tracking_link_order ON outbox ((payload ->> 'orderId')) WHERE job_name = 'order-tracking-link';
