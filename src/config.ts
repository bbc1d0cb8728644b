import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseEnv } from 'node:util';
import envSchema from 'env-schema';
import { CronExpressionParser } from 'cron-parser';
import { Type, type Static } from 'typebox';

// `enum` rather than a union of literals: Ajv then reports one readable line.
function oneOf<const T extends readonly string[]>(values: T, defaultValue: T[number]) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], default: defaultValue });
}

const DEV_WEBHOOK_SECRET = 'errand-dev-webhook-secret-change-me';

// Every variable errand reads. Defaults are the contract's; the few extra
// knobs (timings) exist so tests and operators can shorten them.
export const ConfigSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  ROLE: oneOf(['api', 'worker', 'all'] as const, 'all'),
  DATABASE_URL: Type.String({ pattern: '^postgres(ql)?://', default: 'postgres://postgres@127.0.0.1:5432/errand' }),
  REDIS_URL: Type.String({ pattern: '^rediss?://', default: 'redis://127.0.0.1:6379' }),
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
  PAYMENT_WEBHOOK_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 1 })),
  OUTBOX_RELAY_INTERVAL_MS: Type.Integer({ minimum: 10, default: 1000 }),
  // Rows younger than this are left to the request that wrote them.
  OUTBOX_RELAY_GRACE_MS: Type.Integer({ minimum: 0, default: 5000 }),
  WORKER_LOCK_DURATION_MS: Type.Integer({ minimum: 100, default: 30000 }),
  WORKER_STALLED_INTERVAL_MS: Type.Integer({ minimum: 100, default: 30000 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 100, default: 10000 }),
  PG_POOL_MAX: Type.Integer({ minimum: 1, maximum: 200, default: 10 }),
});

type RawConfig = Static<typeof ConfigSchema>;
export type Config = Readonly<Omit<RawConfig, 'PAYMENT_WEBHOOK_SECRET'> & { PAYMENT_WEBHOOK_SECRET: string }>;

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
  let secret = raw.PAYMENT_WEBHOOK_SECRET;
  if (secret === undefined) {
    if (raw.NODE_ENV === 'production') {
      throw new ConfigError('invalid configuration: PAYMENT_WEBHOOK_SECRET is required when NODE_ENV=production');
    }
    secret = DEV_WEBHOOK_SECRET;
  }
  return Object.freeze({ ...raw, PAYMENT_WEBHOOK_SECRET: secret });
}
