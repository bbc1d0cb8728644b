import type { DestinationStream } from 'pino';
import type { Redis } from 'ioredis';
import type { Config } from './config.js';
import { createDb, type Db } from './core/db.js';
import { createLogger, type Logger } from './core/logger.js';
import { createQueues, type Queues } from './queues.js';
import { createProducerRedis } from './core/redis.js';
import { createMailer, type Mailer } from './email/mailer.js';
import { createMetrics, type Metrics } from './ops/metrics.js';
import { createPublishedMarks, type PublishedMarks } from './outbox/published-marks.js';
import { createHttpPaymentProvider, type PaymentProvider } from './reconcile/provider.js';
import { ProviderSimulator } from './reconcile/simulator.js';

export interface Deps {
  config: Config;
  log: Logger;
  db: Db;
  /** Fail-fast producer connection shared by every Queue (and the readiness check). */
  redis: Redis;
  queues: Queues;
  mailer: Mailer;
  /** Batches the outbox's `published_at` marks across requests (flushed by close). */
  publishedMarks: PublishedMarks;
  /** Prometheus registry and errand's metrics (served at /metrics). */
  metrics: Metrics;
  /** The payment provider's read API (the built-in simulator when PAYMENT_PROVIDER_URL is unset). */
  provider: PaymentProvider;
  close(): Promise<void>;
}

/** Opens what every role needs; nothing here connects at import time. */
export function createDeps(config: Config, options: { logDestination?: DestinationStream; log?: Logger } = {}): Deps {
  const log = options.log ?? createLogger(config.LOG_LEVEL, options.logDestination);
  const db = createDb(config.DATABASE_URL, config.PG_POOL_MAX);
  const redis = createProducerRedis(config.REDIS_URL);
  redis.on('error', (err) => log.debug({ err }, 'producer redis connection error'));
  const queues = createQueues(redis, config, log);
  const publishedMarks = createPublishedMarks(db, log);
  const mailer = createMailer({ smtpUrl: config.SMTP_URL, from: config.MAIL_FROM, mailDir: config.MAIL_DIR });
  const metrics = createMetrics({ db, redis, queues, log });
  const provider = config.PAYMENT_PROVIDER_URL
    ? createHttpPaymentProvider({ baseUrl: config.PAYMENT_PROVIDER_URL, timeoutMs: config.PAYMENT_PROVIDER_TIMEOUT_MS })
    : new ProviderSimulator().client({ timeoutMs: config.PAYMENT_PROVIDER_TIMEOUT_MS });

  return {
    config,
    log,
    db,
    redis,
    queues,
    mailer,
    publishedMarks,
    metrics,
    provider,
    async close() {
      mailer.close();
      await Promise.allSettled(Object.values(queues).map((queue) => queue.close()));
      redis.disconnect();
      await publishedMarks.flush();
      await db.destroy();
    },
  };
}
