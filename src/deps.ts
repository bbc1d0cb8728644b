import type { DestinationStream } from 'pino';
import type { Config } from './config.js';
import { createDataLayer, type DataLayer } from './db/pool.js';
import type { Db } from './db/schema.js';
import { outboxJob } from './db/outbox.js';
import { prepareSignupUser, type SignupUser } from './db/signup-user.js';
import { prepareStoreVerificationToken, type StoreVerificationToken } from './db/verification-tokens.js';
import { prepareFindOrders, type OrderToEmail } from './db/orders.js';
import { prepareSettlePayment, type SettlePayment } from './db/settle-payment.js';
import { createSentEmails, type SentEmails } from './db/sent-emails.js';
import { createSuppressionCheck, type SuppressionCheck } from './db/suppressions.js';
import { EMAIL_VERIFICATION_JOB, ORDER_TRACKING_LINK_JOB, emailQueue } from './email/jobs.js';
import { createLogger, type Logger } from './core/logger.js';
import { createQueues, type Queues } from './queues.js';
import { createRedis, type RedisClient } from './core/redis.js';
import { createMailer, type Mailer } from './email/mailer.js';
import { createMetrics, type Metrics } from './ops/metrics.js';
import { createPublishedMarks, type PublishedMarks } from './outbox/published-marks.js';
import { createPublisher, type Publisher } from './outbox/producer.js';
import { deriveTrackingKey } from './payments/tracking.js';
import { createHttpPaymentProvider, type PaymentProvider } from './reconcile/provider.js';
import { createSimulatorClient, ProviderSimulator } from './reconcile/simulator.js';

/**
 * The statements that concurrent callers share (batched, prepared once per connection), each built once here: a
 * route or a worker calls them as plain functions and never builds its own.
 */
export interface Statements {
  signupUser: SignupUser;
  storeVerificationToken: StoreVerificationToken;
  findOrder: (id: string) => Promise<OrderToEmail | undefined>;
  settlePayment: SettlePayment;
  sentEmails: SentEmails;
  findSuppression: SuppressionCheck;
}

export function createStatements(data: DataLayer): Statements {
  return {
    signupUser: prepareSignupUser(data, outboxJob(emailQueue, EMAIL_VERIFICATION_JOB)),
    storeVerificationToken: prepareStoreVerificationToken(data),
    findOrder: prepareFindOrders(data),
    settlePayment: prepareSettlePayment(data, outboxJob(emailQueue, ORDER_TRACKING_LINK_JOB)),
    sentEmails: createSentEmails(data),
    findSuppression: createSuppressionCheck(data),
  };
}

export interface Deps {
  config: Config;
  log: Logger;
  /** The pool, its prepared statements and the batching switch (src/db). */
  data: DataLayer;
  /** data.db: Kysely on the pool. */
  db: Db;
  statements: Statements;
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
  /** Publish-after-commit's shared Redis writes (one addBulk per queue per event-loop turn). */
  publisher: Publisher;
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
  const data = createDataLayer(config.DATABASE_URL, {
    poolMax: config.PG_POOL_MAX,
    batching: config.DB_BATCHING === 'on',
    statementTimeoutMs: config.PG_STATEMENT_TIMEOUT_MS,
    queryTimeoutMs: config.PG_QUERY_TIMEOUT_MS,
    keepAliveDelayMs: config.PG_KEEPALIVE_DELAY_MS,
  });
  const { db } = data;
  const statements = createStatements(data);
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
    data,
    db,
    statements,
    redis,
    workerRedis,
    queues,
    mailer,
    publishedMarks,
    publisher: createPublisher(queues, config.OUTBOX_PUBLISH_DEADLINE_MS),
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
      await data.destroy();
    },
  };
}
