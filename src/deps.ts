import type { DestinationStream } from 'pino';
import type { Config } from './config.js';
import { createDb, type Db } from './core/db.js';
import { createLogger, type Logger } from './core/logger.js';
import { createQueues, type Queues } from './queues.js';
import { createRedis, type RedisClient } from './core/redis.js';
import { createMailer, type Mailer } from './email/mailer.js';
import { createMetrics, type Metrics } from './ops/metrics.js';
import { createPublishedMarks, type PublishedMarks } from './outbox/published-marks.js';
import { deriveTrackingKey } from './payments/tracking.js';
import { createHttpPaymentProvider, type PaymentProvider } from './reconcile/provider.js';
import { createSimulatorClient, ProviderSimulator } from './reconcile/simulator.js';

export interface Deps {
  config: Config;
  log: Logger;
  db: Db;
  /** Fail-fast producer connection shared by every Queue (and the readiness check). */
  redis: RedisClient;
  /**
   * Worker-profile connection (waits for Redis) shared by every Worker's non-blocking commands and duplicated by
   * each Worker and QueueEvents for its blocking reads. Connects on first use: an `api` process never opens it.
   */
  workerRedis: RedisClient;
  queues: Queues;
  mailer: Mailer;
  /** Batches the outbox's `published_at` marks across requests (flushed by close). */
  publishedMarks: PublishedMarks;
  /** Prometheus registry and errand's metrics (served at /metrics). */
  metrics: Metrics;
  /** The payment provider's read API (the built-in simulator when PAYMENT_PROVIDER_URL is unset). */
  provider: PaymentProvider;
  /** Key of tracking-link tokens, derived once from LINK_SECRET (the route and the email composer share it). */
  trackingKey: Buffer;
  close(): Promise<void>;
}

/** Opens what every role needs; nothing here connects at import time. */
export function createDeps(config: Config, options: { logDestination?: DestinationStream; log?: Logger } = {}): Deps {
  const log = options.log ?? createLogger(config.LOG_LEVEL, options.logDestination);
  const db = createDb(config.DATABASE_URL, config.PG_POOL_MAX, {
    statementTimeoutMs: config.PG_STATEMENT_TIMEOUT_MS,
    queryTimeoutMs: config.PG_QUERY_TIMEOUT_MS,
    keepAliveDelayMs: config.PG_KEEPALIVE_DELAY_MS,
  });
  const redis = createRedis(config.redis, 'producer');
  redis.on('error', (err) => log.debug({ err }, 'producer redis connection error'));
  // Lazy only where no worker uses it (api). A lazy connection is in state 'wait', and BullMQ then calls its
  // connect(), whose promise rejects on the first refused attempt: a worker started with Redis down never ran.
  // Connecting now, it keeps retrying and BullMQ waits for 'ready'.
  const workerRedis = createRedis(config.redis, 'worker', { lazyConnect: config.ROLE === 'api' });
  workerRedis.on('error', (err) => log.debug({ err }, 'worker redis connection error'));
  const queues = createQueues(redis, config, log);
  const publishedMarks = createPublishedMarks(db, log);
  const mailer = createMailer({
    smtpUrl: config.SMTP_URL,
    from: config.MAIL_FROM,
    mailDir: config.MAIL_DIR,
    maxConnections: config.EMAIL_CONCURRENCY,
  });
  const metrics = createMetrics({ db, redis, queues, log });
  const provider = config.PAYMENT_PROVIDER_URL
    ? createHttpPaymentProvider({ baseUrl: config.PAYMENT_PROVIDER_URL, timeoutMs: config.PAYMENT_PROVIDER_TIMEOUT_MS })
    : createSimulatorClient(new ProviderSimulator(), { timeoutMs: config.PAYMENT_PROVIDER_TIMEOUT_MS });

  return {
    config,
    log,
    db,
    redis,
    workerRedis,
    queues,
    mailer,
    publishedMarks,
    metrics,
    provider,
    trackingKey: deriveTrackingKey(config.LINK_SECRET),
    async close() {
      mailer.close();
      await Promise.allSettled(Object.values(queues).map((queue) => queue.close()));
      redis.disconnect();
      // After the workers and queue events (closed by their owner before this): they share it.
      workerRedis.disconnect();
      await publishedMarks.flush();
      await db.destroy();
    },
  };
}
