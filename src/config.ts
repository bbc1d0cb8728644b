import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseEnv } from 'node:util';
import envSchema from 'env-schema';
import { CronExpressionParser } from 'cron-parser';
import { Type, type Static } from 'typebox';
import { clusterQueuePrefix, parseRedisUrl, type RedisTopology } from './core/redis-url.js';

// `enum` rather than a union of literals: Ajv then reports one readable line.
function oneOf<const T extends readonly string[]>(values: T, defaultValue: T[number]) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], default: defaultValue });
}

const DEV_WEBHOOK_SECRET = 'errand-dev-webhook-secret-change-me';
const DEV_LINK_SECRET = 'errand-dev-link-secret-change-me';

// Every variable errand reads. Defaults are the contract's; the few extra
// knobs (timings) exist so tests and operators can shorten them.
export const ConfigSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  ROLE: oneOf(['api', 'worker', 'all'] as const, 'all'),
  DATABASE_URL: Type.String({ pattern: '^postgres(ql)?://', default: 'postgres://postgres@127.0.0.1:5432/errand' }),
  // Parsed (and checked) by parseRedisUrl below: a pattern could not say what is wrong with a host list.
  REDIS_URL: Type.String({ minLength: 1, default: 'redis://127.0.0.1:6379' }),
  QUEUE_PREFIX: Type.String({ minLength: 1, pattern: '^[^:\\s]+$', default: 'errand' }),
  LOG_LEVEL: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
  PUBLIC_BASE_URL: Type.String({ pattern: '^https?://[^\\s]+$', default: 'http://localhost:3000' }),
  MAIL_FROM: Type.String({ minLength: 3, default: 'errand <no-reply@localhost>' }),
  SMTP_URL: Type.Optional(Type.String({ pattern: '^smtps?://' })),
  MAIL_DIR: Type.String({ minLength: 1, default: 'var/mail' }),
  EMAIL_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 1000, default: 1 }),
  EMAIL_RATE_MAX: Type.Integer({ minimum: 1, default: 1 }),
  EMAIL_RATE_DURATION_MS: Type.Integer({ minimum: 1, default: 150 }),
  JOB_ATTEMPTS: Type.Integer({ minimum: 1, maximum: 100, default: 3 }),
  JOB_BACKOFF_MS: Type.Integer({ minimum: 0, default: 60000 }),
  // Fallback pause when an SMTP server throttles us without saying for how long.
  EMAIL_THROTTLE_MS: Type.Integer({ minimum: 1, default: 30000 }),
  PAYMENTS_RECONCILE_ENABLED: Type.Boolean({ default: false }),
  PAYMENTS_RECONCILE_CRON: Type.String({ minLength: 1, default: '0 * * * *' }),
  PAYMENTS_RECONCILE_TZ: Type.String({ minLength: 1, default: 'UTC' }),
  PAYMENTS_RECONCILE_WINDOW_HOURS: Type.Integer({ minimum: 1, maximum: 24 * 90, default: 24 }),
  PAYMENTS_RECONCILE_LIMIT: Type.Integer({ minimum: 1, maximum: 100000, default: 200 }),
  PAYMENTS_RECONCILE_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 64, default: 4 }),
  PAYMENT_PROVIDER_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  PAYMENT_PROVIDER_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 5000 }),
  // Several secrets separated by spaces during a rotation; any one may sign.
  PAYMENT_WEBHOOK_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  // errand's own key for tracking-link tokens; never shared with the payment provider.
  LINK_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 1 })),
  // Set: traces go out over OTLP/HTTP and the standard OTEL_* variables apply; unset: no OpenTelemetry code is loaded.
  OTEL_EXPORTER_OTLP_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$' })),
  OUTBOX_RELAY_INTERVAL_MS: Type.Integer({ minimum: 10, default: 1000 }),
  // Rows younger than this are left to the request that wrote them.
  OUTBOX_RELAY_GRACE_MS: Type.Integer({ minimum: 0, default: 5000 }),
  WORKER_LOCK_DURATION_MS: Type.Integer({ minimum: 100, default: 30000 }),
  WORKER_STALLED_INTERVAL_MS: Type.Integer({ minimum: 100, default: 30000 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 100, default: 10000 }),
  PG_POOL_MAX: Type.Integer({ minimum: 1, maximum: 200, default: 10 }),
  BATCH_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 64, default: 1 }),
  IMPORT_MAX_BYTES: Type.Integer({ minimum: 1, maximum: 1024 * 1024 * 1024, default: 52428800 }),
  // Rows per batch chunk: each chunk is one transaction with its checkpoint, and one progress report.
  BATCH_CHUNK_ROWS: Type.Integer({ minimum: 1, maximum: 10000, default: 1000 }),
  // Pause between chunks, to spare a busy primary during a long export or backfill.
  BATCH_CHUNK_PAUSE_MS: Type.Integer({ minimum: 0, maximum: 60000, default: 0 }),
  // Batch jobs run for minutes: a longer lock than the other queues, so a slow chunk never loses it.
  BATCH_LOCK_DURATION_MS: Type.Integer({ minimum: 100, default: 60000 }),
  BATCH_STALLED_INTERVAL_MS: Type.Integer({ minimum: 100, default: 30000 }),
});

type RawConfig = Static<typeof ConfigSchema>;
export type Config = Readonly<
  Omit<RawConfig, 'PAYMENT_WEBHOOK_SECRET' | 'LINK_SECRET'> & {
    PAYMENT_WEBHOOK_SECRET: string;
    /** PAYMENT_WEBHOOK_SECRET split on whitespace, in the order given (the first one signs, in scripts). */
    PAYMENT_WEBHOOK_SECRETS: readonly string[];
    LINK_SECRET: string;
    /** REDIS_URL parsed: every Redis connection is made from this (core/redis.ts). */
    redis: RedisTopology;
  }
>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/**
 * The process environment laid over `.env` in `cwd`, when there is one: a variable
 * already in the environment wins. Read into an object (Node's own parser,
 * the one behind `process.loadEnvFile`), never written into `process.env`.
 */
export function environmentWithDotenv(env: Record<string, string | undefined> = process.env, cwd: string = process.cwd()): Record<string, string | undefined> {
  const path = join(cwd, '.env');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { ...env };
    throw new ConfigError(`invalid configuration: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined));
  return { ...parseEnv(text), ...present };
}

/** Validates `env` against the schema; throws a one-line ConfigError naming the bad variable. */
export function loadConfig(env: Record<string, string | undefined> = environmentWithDotenv()): Config {
  // Empty strings mean "unset", as in most .env files.
  const data = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  let raw: RawConfig;
  try {
    raw = envSchema<RawConfig>({ schema: ConfigSchema, data, env: false, dotenv: false });
  } catch (error) {
    throw new ConfigError(`invalid configuration: ${(error as Error).message.replace(/env\//g, '')}`);
  }
  // Checked here, not at the scheduler's first upsert, so a typo stops start-up instead of failing every retry.
  if (!isTimeZone(raw.PAYMENTS_RECONCILE_TZ)) {
    throw new ConfigError(`invalid configuration: PAYMENTS_RECONCILE_TZ is not a known time zone`);
  }
  try {
    CronExpressionParser.parse(raw.PAYMENTS_RECONCILE_CRON, { tz: raw.PAYMENTS_RECONCILE_TZ });
  } catch (error) {
    throw new ConfigError(`invalid configuration: PAYMENTS_RECONCILE_CRON is not a valid cron pattern (${(error as Error).message})`);
  }
  const webhookSecret = raw.PAYMENT_WEBHOOK_SECRET?.trim() || undefined;
  if (webhookSecret === undefined && raw.NODE_ENV === 'production') {
    throw new ConfigError('invalid configuration: PAYMENT_WEBHOOK_SECRET is required when NODE_ENV=production');
  }
  let redis: RedisTopology;
  try {
    redis = parseRedisUrl(raw.REDIS_URL);
  } catch (error) {
    throw new ConfigError(`invalid configuration: REDIS_URL ${(error as Error).message}`);
  }
  let queuePrefix = raw.QUEUE_PREFIX;
  if (redis.kind === 'cluster') {
    try {
      queuePrefix = clusterQueuePrefix(queuePrefix);
    } catch (error) {
      throw new ConfigError(`invalid configuration: ${(error as Error).message}`);
    }
  }
  const webhookSecrets = Object.freeze((webhookSecret ?? DEV_WEBHOOK_SECRET).split(/\s+/));
  // A Standard Webhooks secret is `whsec_` + base64; a typo there would make every signature fail, so say so now.
  for (const secret of webhookSecrets) {
    if (secret.startsWith('whsec_') && !/^[A-Za-z0-9+/]+={0,2}$/.test(secret.slice('whsec_'.length))) {
      throw new ConfigError('invalid configuration: PAYMENT_WEBHOOK_SECRET has a whsec_ secret whose rest is not base64');
    }
  }
  if (raw.LINK_SECRET === undefined && raw.NODE_ENV === 'production') {
    throw new ConfigError('invalid configuration: LINK_SECRET is required when NODE_ENV=production');
  }
  return Object.freeze({
    ...raw,
    QUEUE_PREFIX: queuePrefix,
    redis,
    PAYMENT_WEBHOOK_SECRET: webhookSecret ?? DEV_WEBHOOK_SECRET,
    PAYMENT_WEBHOOK_SECRETS: webhookSecrets,
    LINK_SECRET: raw.LINK_SECRET ?? DEV_LINK_SECRET,
  });
}
