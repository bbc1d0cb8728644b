import Fastify from 'fastify';
import { OneLineAccessLog } from './core/access-log.js';
import type { Deps } from './deps.js';
import { trustProxySetting, type TrustProxy } from './config.js';
import { registerRateLimit } from './core/rate-limit.js';
import { schemaErrorFormatter } from './core/schemas.js';
import { addStandardErrorResponses, errorHandler, notFoundHandler } from './core/errors.js';
import { healthRoutes } from './ops/health.routes.js';
import { instrumentHttp, metricsRoutes } from './ops/metrics.js';
import { registerApiDocs } from './ops/docs.js';
import { signupRoutes } from './signup/routes.js';
import { orderRoutes } from './payments/orders.routes.js';
import { webhookRoutes } from './payments/webhook.routes.js';
import { emailEventsRoutes } from './email/events.routes.js';
import { emailEventsOptions, type EmailEventsOptions } from './email/events/options.js';

export interface AppOptions {
  /** Laid over what config says (tests: a CA for the SNS certificate fetch). */
  emailEvents?: Partial<EmailEventsOptions>;
}

/** A hop count as the function Fastify runs it as (its types leave the number form out): trust the nearest `hops` proxies. */
function fastifyTrustProxy(setting: TrustProxy): boolean | string[] | ((address: string, hop: number) => boolean) {
  return typeof setting === 'number' ? (_address, hop) => hop < setting : setting;
}

/** Builds (never starts) the HTTP app. Public routes only when the role serves them. */
export async function buildApp(deps: Deps, options: AppOptions = {}) {
  const app = Fastify({
    loggerInstance: deps.log,
    // The contract wants 400s where Fastify's defaults would coerce types or strip unknown fields.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false } },
    schemaErrorFormatter,
    bodyLimit: 64 * 1024,
    // Plugin start-up is local work (schemas, swagger-ui's static files); on a starved CPU it has exceeded Fastify's
    // default 10 s and failed the start. A genuinely stuck plugin still fails start-up, just later.
    pluginTimeout: 60_000,
    // A long id in /orders/:id/tracking is a wrong id (404 'order not found'), not an unknown route.
    routerOptions: { maxParamLength: 1000 },
    // Answer 503 to new requests while closing, and let keep-alive clients go.
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // Who the client is: the socket's address unless TRUST_PROXY says which proxies' X-Forwarded-For to believe.
    trustProxy: fastifyTrustProxy(trustProxySetting(deps.config.TRUST_PROXY)),
    // A client trickling its request (or holding an idle socket) is cut off instead of holding it forever.
    requestTimeout: deps.config.HTTP_REQUEST_TIMEOUT_MS,
    connectionTimeout: deps.config.HTTP_CONNECTION_TIMEOUT_MS,
    keepAliveTimeout: deps.config.HTTP_KEEP_ALIVE_TIMEOUT_MS,
    // Node reads requestTimeout when the server is constructed (Fastify's later assignment has no effect on it), and
    // checks it every connectionsCheckingInterval (30 s by default): often enough for the timeout to mean something.
    http: {
      requestTimeout: deps.config.HTTP_REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: Math.min(30000, Math.max(100, Math.floor(deps.config.HTTP_REQUEST_TIMEOUT_MS / 4) || 30000)),
    },
    logController: new OneLineAccessLog(),
  });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);
  // Before any route: both hooks see each route as it is added.
  app.addHook('onRoute', addStandardErrorResponses);
  // The roles that serve the API also serve its description; a worker has no public routes to describe.
  if (deps.config.ROLE !== 'worker') await registerApiDocs(app);

  instrumentHttp(app, deps.metrics);
  await registerRateLimit(app, {
    redis: deps.redis,
    log: deps.log,
    keyPrefix: deps.config.QUEUE_PREFIX,
    max: deps.config.RATE_LIMIT_MAX,
    windowMs: deps.config.RATE_LIMIT_WINDOW_MS,
  });
  await app.register(healthRoutes, { db: deps.db, redis: deps.redis });
  await app.register(metricsRoutes, { metrics: deps.metrics });
  if (deps.config.ROLE !== 'worker') {
    await app.register(signupRoutes, {
      db: deps.db,
      statements: deps.statements,
      redis: deps.redis,
      queues: deps.queues,
      log: deps.log,
      publishedMarks: deps.publishedMarks,
      publisher: deps.publisher,
    });
    await app.register(orderRoutes, { db: deps.db, trackingKey: deps.trackingKey });
    await app.register(webhookRoutes, {
      db: deps.db,
      redis: deps.redis,
      queues: deps.queues,
      log: deps.log,
      publishedMarks: deps.publishedMarks,
      publisher: deps.publisher,
      webhookSecrets: deps.config.PAYMENT_WEBHOOK_SECRETS,
      lateSuccess: deps.metrics.paymentsLateSuccess,
      statements: deps.statements,
    });
    await app.register(emailEventsRoutes, {
      db: deps.db,
      options: { ...emailEventsOptions(deps.config), ...options.emailEvents },
      emailEvents: deps.metrics.emailEvents,
    });
  }
  // Unset ADMIN_TOKEN: the admin routes do not exist (404), rather than exist unprotected.
  const adminToken = deps.config.ADMIN_TOKEN;
  if (deps.config.ROLE !== 'worker' && adminToken) {
    // Imported only here: Bull Board and the admin routes cost start-up time and memory that most replicas never use.
    const [{ adminRoutes }, { boardRoutes }, { jobRoutes }, { batchRoutes }, { suppressionRoutes }] = await Promise.all([
      import('./ops/admin.routes.js'),
      import('./ops/board.js'),
      import('./ops/jobs.routes.js'),
      import('./batch/routes.js'),
      import('./ops/suppressions.routes.js'),
    ]);
    await app.register(adminRoutes, { config: deps.config, redis: deps.redis, queues: deps.queues, adminToken });
    await app.register(boardRoutes, { queues: deps.queues, adminToken });
    await app.register(jobRoutes, {
      config: deps.config,
      db: deps.db,
      redis: deps.redis,
      workerRedis: deps.workerRedis,
      queues: deps.queues,
      adminToken,
    });
    await app.register(batchRoutes, {
      config: deps.config,
      db: deps.db,
      redis: deps.redis,
      queues: deps.queues,
      log: deps.log,
      publishedMarks: deps.publishedMarks,
      publisher: deps.publisher,
      adminToken,
    });
    await app.register(suppressionRoutes, { db: deps.db, adminToken });
  }
  return app;
}

export type App = Awaited<ReturnType<typeof buildApp>>;
