-- Cancel sticks: POST /admin/jobs/:queue/:id/cancel records the cancellation here before it
-- removes the job from Redis. The relay and the re-publish after a reconnect never add a
-- cancelled outbox row again, and a worker fails any cancelled job that still reaches it
-- (a re-add that raced the cancel, a failover that lost the removal) with reason `cancelled`.
ALTER TABLE outbox ADD COLUMN cancelled_at timestamptz;
CREATE TABLE cancelled_jobs (
  queue text NOT NULL,
  job_id text NOT NULL,
  cancelled_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (queue, job_id)
);
