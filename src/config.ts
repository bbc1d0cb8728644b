import { createPublicKey } from 'node:crypto';
import { isIP } from 'node:net';
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

export const DEV_WEBHOOK_SECRET = 'errand-dev-webhook-secret-change-me';
export const DEV_LINK_SECRET = 'errand-dev-link-secret-change-me';
/** Values published in this repository (defaults, compose placeholders, docs): never secrets in production. */
const PUBLISHED_SECRETS = new Set([
  DEV_WEBHOOK_SECRET,
  DEV_LINK_SECRET,
  'compose-webhook-secret-change-me',
  'compose-admin-token-change-me',
]);
const MIN_SECRET_LENGTH = 32;
/**
 * Example values the providers publish in their documentation (the Standard Webhooks / Svix example secret):
 * pasted into production they are no secret at all.
 */
const PUBLISHED_EMAIL_EVENT_SECRETS = new Set(['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']);
/**
 * Mailgun generates its webhook signing key (32 hex characters, or `key-` + 32 hex on older accounts): 16 is
 * half of the shortest real one, so every key Mailgun issues passes while a placeholder, a hand-typed word or a
 * paste cut in half stops start-up. A higher bar would only risk refusing a real key of a form not seen here.
 */
export const MIN_MAILGUN_SIGNING_KEY_LENGTH = 16;
/** Postmark sends the credentials errand chose: the password part is a secret like any other (128 bits of base64 ≈ 22). */
export const MIN_POSTMARK_PASSWORD_LENGTH = 16;
/** Resend (Svix) secrets are `whsec_` + base64 of 24 random bytes. */
export const MIN_RESEND_SECRET_BYTES = 24;
export const DEFAULT_SNS_CERT_HOST = '^sns\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?$';
// arn:partition:sns:region:account:topic (a FIFO topic ends in .fifo); SNS topic names: letters, digits, - and _, ≤ 256.
const SNS_TOPIC_ARN = /^arn:aws(-cn|-us-gov)?:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$/;

// Every variable errand reads. Defaults are the contract's; the few extra
// knobs (timings) exist so tests and operators can shorten them.
export const ConfigSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  ROLE: oneOf(['api', 'worker', 'all'] as const, 'all'),
  DATABASE_URL: Type.String({ pattern: '^postgres(ql)?://', default: 'postgres://postgres@127.0.0.1:5432/errand' }),
  // Parsed with the WHATWG parser below too: pg, nodemailer and the email links parse them later, and a value that
  // does not parse must stop start-up here, in one line that never quotes it (it may hold a password).
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
  // false | true | a hop count | a comma-separated list of addresses/CIDRs (parsed by trustProxySetting).
  TRUST_PROXY: Type.String({ minLength: 1, default: 'false' }),
  RATE_LIMIT_MAX: Type.Integer({ minimum: 1, default: 20 }),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ minimum: 1, default: 60000 }),
  // Slow clients and dead connections: a whole request within this (0 = no limit), an idle socket, an idle keep-alive.
  HTTP_REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 0, default: 30000 }),
  HTTP_CONNECTION_TIMEOUT_MS: Type.Integer({ minimum: 0, default: 60000 }),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 72000 }),
  // PostgreSQL: server-side statement limit, client-side query limit, TCP keep-alive of pooled connections.
  PG_STATEMENT_TIMEOUT_MS: Type.Integer({ minimum: 0, default: 30000 }),
  PG_QUERY_TIMEOUT_MS: Type.Integer({ minimum: 0, default: 35000 }),
  PG_KEEPALIVE_DELAY_MS: Type.Integer({ minimum: 0, default: 10000 }),
  // Outages: the email queue's first pause, doubled per consecutive outage failure up to the cap.
  EMAIL_OUTAGE_PAUSE_MS: Type.Integer({ minimum: 1, default: 5000 }),
  EMAIL_OUTAGE_MAX_PAUSE_MS: Type.Integer({ minimum: 1, default: 300000 }),
  // Bounds a job that keeps being put back by pauses (each pause restarts it once): ~a week at the 5 min cap.
  EMAIL_MAX_STARTED_ATTEMPTS: Type.Integer({ minimum: 1, default: 2500 }),
  OUTBOX_RELAY_BATCH_SIZE: Type.Integer({ minimum: 1, maximum: 10000, default: 500 }),
  // A row failing this many relay passes (with Redis up) is skipped and logged at error.
  OUTBOX_MAX_FAILURES: Type.Integer({ minimum: 1, default: 5 }),
  RETENTION_DAYS: Type.Integer({ minimum: 1, maximum: 36500, default: 30 }),
  RETENTION_BATCH_SIZE: Type.Integer({ minimum: 1, maximum: 100000, default: 1000 }),
  MAINTENANCE_CRON: Type.String({ minLength: 1, default: '30 3 * * *' }),
  // Set: traces go out over OTLP/HTTP and the standard OTEL_* variables apply; unset: no OpenTelemetry code is loaded.
  OTEL_EXPORTER_OTLP_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$' })),
  OUTBOX_RELAY_INTERVAL_MS: Type.Integer({ minimum: 10, default: 1000 }),
  // Rows younger than this are left to the request that wrote them.
  OUTBOX_RELAY_GRACE_MS: Type.Integer({ minimum: 0, default: 5000 }),
  // How long a request waits for its jobs to reach Redis after commit; after it, it answers and the relay publishes them.
  OUTBOX_PUBLISH_DEADLINE_MS: Type.Integer({ minimum: 1, maximum: 60000, default: 300 }),
  WORKER_LOCK_DURATION_MS: Type.Integer({ minimum: 100, default: 30000 }),
  WORKER_STALLED_INTERVAL_MS: Type.Integer({ minimum: 100, default: 30000 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 100, default: 10000 }),
  PG_POOL_MAX: Type.Integer({ minimum: 1, maximum: 200, default: 10 }),
  // off: each caller's row of a shared statement (signup, settle, the email worker's) runs alone, for debugging (src/db/batch.ts).
  DB_BATCHING: Type.Union([Type.Literal('on'), Type.Literal('off')], { default: 'on' }),
  BATCH_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 64, default: 1 }),
  IMPORT_MAX_BYTES: Type.Integer({ minimum: 1, maximum: 1024 * 1024 * 1024, default: 52428800 }),
  // Rows per batch chunk: each chunk is one transaction with its checkpoint, and one progress report.
  // Unset: each job kind's own default (batch/jobs.ts: 1000 for imports and backfills, 10000 for exports).
  BATCH_CHUNK_ROWS: Type.Optional(Type.Integer({ minimum: 1, maximum: 50000 })),
  // Pause between chunks, to spare a busy primary during a long export or backfill.
  BATCH_CHUNK_PAUSE_MS: Type.Integer({ minimum: 0, maximum: 60000, default: 0 }),
  // Batch jobs run for minutes: a longer lock than the other queues, so a slow chunk never loses it.
  BATCH_LOCK_DURATION_MS: Type.Integer({ minimum: 100, default: 60000 }),
  BATCH_STALLED_INTERVAL_MS: Type.Integer({ minimum: 100, default: 30000 }),
  // Email events (bounces, complaints): each receiver is enabled by its provider's setting; checked in emailEventSettings().
  EMAIL_EVENTS_SES_TOPIC_ARNS: Type.Optional(Type.String()),
  EMAIL_EVENTS_SNS_CERT_HOST: Type.String({ minLength: 1, default: DEFAULT_SNS_CERT_HOST }),
  EMAIL_EVENTS_SENDGRID_PUBLIC_KEY: Type.Optional(Type.String()),
  EMAIL_EVENTS_MAILGUN_SIGNING_KEY: Type.Optional(Type.String()),
  EMAIL_EVENTS_POSTMARK_AUTH: Type.Optional(Type.String()),
  EMAIL_EVENTS_RESEND_SECRET: Type.Optional(Type.String()),
  EMAIL_SOFT_BOUNCE_LIMIT: Type.Integer({ minimum: 1, maximum: 1000, default: 3 }),
  EMAIL_SOFT_BOUNCE_WINDOW_DAYS: Type.Integer({ minimum: 1, maximum: 3650, default: 7 }),
});

type RawConfig = Static<typeof ConfigSchema>;
export type Config = Readonly<
  Omit<RawConfig, 'PAYMENT_WEBHOOK_SECRET' | 'LINK_SECRET' | 'EMAIL_EVENTS_SES_TOPIC_ARNS'> & {
    PAYMENT_WEBHOOK_SECRET: string;
    /** PAYMENT_WEBHOOK_SECRET split on whitespace, in the order given (the first one signs, in scripts). */
    PAYMENT_WEBHOOK_SECRETS: readonly string[];
    LINK_SECRET: string;
    /** REDIS_URL parsed: every Redis connection is made from this (core/redis.ts). */
    redis: RedisTopology;
    /** The comma-separated ARNs, trimmed and checked; empty when unset (the SES receiver is then off). */
    EMAIL_EVENTS_SES_TOPIC_ARNS: readonly string[];
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
export function environmentWithDotenv(
  env: Record<string, string | undefined> = process.env,
  cwd: string = process.cwd(),
): Record<string, string | undefined> {
  const path = join(cwd, '.env');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { ...env };
    throw new ConfigError(
      `invalid configuration: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
    );
  }
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined));
  return { ...parseEnv(text), ...present };
}

/** Validates `env` against the schema; throws a one-line ConfigError naming the bad variable. */
export function loadConfig(env: Record<string, string | undefined> = environmentWithDotenv()): Config {
  // A value of blanks only means "unset" (CONTRACT.md), as an empty one does in most .env files: defaults and
  // production refusals then apply, instead of a secret of spaces that has nothing to check.
  const data = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value.trim() !== ''));
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
  try {
    CronExpressionParser.parse(raw.MAINTENANCE_CRON, { tz: 'UTC' });
  } catch (error) {
    throw new ConfigError(`invalid configuration: MAINTENANCE_CRON is not a valid cron pattern (${(error as Error).message})`);
  }
  trustProxySetting(raw.TRUST_PROXY);
  checkUrls(raw);
  const sesTopicArns = emailEventSettings(raw);
  if (raw.NODE_ENV === 'production') refuseUnsafeProduction(raw);
  const webhookSecret = raw.PAYMENT_WEBHOOK_SECRET?.trim() || undefined;
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
  return Object.freeze({
    ...raw,
    QUEUE_PREFIX: queuePrefix,
    redis,
    PAYMENT_WEBHOOK_SECRET: webhookSecret ?? DEV_WEBHOOK_SECRET,
    PAYMENT_WEBHOOK_SECRETS: webhookSecrets,
    LINK_SECRET: raw.LINK_SECRET ?? DEV_LINK_SECRET,
    EMAIL_EVENTS_SES_TOPIC_ARNS: sesTopicArns,
  });
}

/** Every URL variable, parsed as it will be later; the error names the variable and never quotes the value. */
function checkUrls(raw: RawConfig): void {
  const urls: [string, string | undefined, readonly string[]][] = [
    ['DATABASE_URL', raw.DATABASE_URL, ['postgres:', 'postgresql:']],
    ['SMTP_URL', raw.SMTP_URL, ['smtp:', 'smtps:']],
    ['PUBLIC_BASE_URL', raw.PUBLIC_BASE_URL, ['http:', 'https:']],
    ['PAYMENT_PROVIDER_URL', raw.PAYMENT_PROVIDER_URL, ['http:', 'https:']],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', raw.OTEL_EXPORTER_OTLP_ENDPOINT, ['http:', 'https:']],
  ];
  for (const [name, value, protocols] of urls) {
    if (value === undefined) continue;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new ConfigError(`invalid configuration: ${name} is not a valid URL (value not shown: it may hold a password)`);
    }
    if (!protocols.includes(url.protocol)) {
      throw new ConfigError(`invalid configuration: ${name} must start with ${protocols.map((p) => `${p}//`).join(' or ')}`);
    }
    if (url.hostname === '' && name !== 'DATABASE_URL') throw new ConfigError(`invalid configuration: ${name} has no host`);
    // pg and nodemailer decode these: a bad %-escape would throw there, outside this check.
    for (const part of [url.username, url.password, name === 'DATABASE_URL' ? url.pathname : '']) {
      try {
        decodeURIComponent(part);
      } catch {
        throw new ConfigError(`invalid configuration: ${name} has a malformed %-escape (value not shown: it may hold a password)`);
      }
    }
  }
}

function emailEventsError(message: string): never {
  throw new ConfigError(`invalid configuration: ${message}`);
}

/** The email-event receivers' settings, checked everywhere (a typo would fail every event); returns the SES topic ARNs. */
function emailEventSettings(raw: RawConfig): readonly string[] {
  const arns = (raw.EMAIL_EVENTS_SES_TOPIC_ARNS ?? '')
    .split(',')
    .map((arn) => arn.trim())
    .filter(Boolean);
  arns.forEach((arn, i) => {
    if (!SNS_TOPIC_ARN.test(arn))
      emailEventsError(`EMAIL_EVENTS_SES_TOPIC_ARNS entry ${i + 1} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC)`);
  });

  let certHost: RegExp;
  try {
    certHost = new RegExp(raw.EMAIL_EVENTS_SNS_CERT_HOST);
  } catch {
    emailEventsError('EMAIL_EVENTS_SNS_CERT_HOST is not a valid regular expression');
  }
  // Unanchored, `amazonaws\.com` would also match amazonaws.com.attacker.example: errand would fetch its certificate.
  if (!raw.EMAIL_EVENTS_SNS_CERT_HOST.startsWith('^') || !raw.EMAIL_EVENTS_SNS_CERT_HOST.endsWith('$') || certHost.test('')) {
    emailEventsError('EMAIL_EVENTS_SNS_CERT_HOST must be anchored (^…$) and match only non-empty host names');
  }

  if (raw.EMAIL_EVENTS_SENDGRID_PUBLIC_KEY !== undefined) {
    let key;
    try {
      key = createPublicKey({ key: Buffer.from(raw.EMAIL_EVENTS_SENDGRID_PUBLIC_KEY.trim(), 'base64'), format: 'der', type: 'spki' });
    } catch {
      emailEventsError('EMAIL_EVENTS_SENDGRID_PUBLIC_KEY is not a base64 DER (SPKI) public key');
    }
    // SendGrid signs with ECDSA over P-256.
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      emailEventsError('EMAIL_EVENTS_SENDGRID_PUBLIC_KEY must be an EC P-256 public key (ECDSA, as SendGrid signs)');
    }
  }

  if (raw.EMAIL_EVENTS_POSTMARK_AUTH !== undefined) {
    const colon = raw.EMAIL_EVENTS_POSTMARK_AUTH.indexOf(':');
    if (colon < 0 || colon === raw.EMAIL_EVENTS_POSTMARK_AUTH.length - 1) {
      emailEventsError('EMAIL_EVENTS_POSTMARK_AUTH must be user:password (a colon, then a non-empty password)');
    }
  }

  if (raw.EMAIL_EVENTS_RESEND_SECRET !== undefined && resendSecretBytes(raw.EMAIL_EVENTS_RESEND_SECRET) === undefined) {
    emailEventsError('EMAIL_EVENTS_RESEND_SECRET must be whsec_ followed by base64 (as Resend shows it)');
  }
  return Object.freeze(arns);
}

/** The key bytes of a `whsec_…` secret, or undefined when it is not one. */
function resendSecretBytes(secret: string): number | undefined {
  const match = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(secret.trim());
  return match ? Buffer.from(match[1], 'base64').length : undefined;
}

function refuse(message: string): never {
  throw new ConfigError(`invalid configuration: ${message} (NODE_ENV=production)`);
}

/** The contract's production refusals: each names its variable. */
function refuseUnsafeProduction(raw: RawConfig): void {
  for (const name of ['PAYMENT_WEBHOOK_SECRET', 'LINK_SECRET'] as const) {
    const value = raw[name];
    if (value === undefined) refuse(`${name} is required`);
    // Several webhook secrets separated by spaces during a rotation: each one must hold.
    for (const secret of value.split(/\s+/).filter(Boolean)) {
      if (PUBLISHED_SECRETS.has(secret)) refuse(`${name} is a published development default`);
      if (secret.length < MIN_SECRET_LENGTH) refuse(`${name} must be at least ${MIN_SECRET_LENGTH} characters`);
    }
  }
  if (raw.ADMIN_TOKEN !== undefined && (raw.ADMIN_TOKEN.length < MIN_SECRET_LENGTH || PUBLISHED_SECRETS.has(raw.ADMIN_TOKEN))) {
    refuse(`ADMIN_TOKEN must be at least ${MIN_SECRET_LENGTH} characters and not a published default when set`);
  }
  if (!raw.PUBLIC_BASE_URL.startsWith('https://') || raw.PUBLIC_BASE_URL === 'http://localhost:3000') {
    refuse('PUBLIC_BASE_URL must be set to an https:// URL');
  }
  if (raw.SMTP_URL === undefined) refuse('SMTP_URL is required (without it emails are only written to files)');
  // true takes the left-most X-Forwarded-For address, which the client writes itself.
  if (trustProxySetting(raw.TRUST_PROXY) === true) {
    refuse("TRUST_PROXY=true lets any client pick its address; set the hop count (e.g. 1) or the proxies' addresses");
  }
  // The email-event secrets are optional; one that is set must hold (a blank one is unset: see loadConfig).
  const mailgun = raw.EMAIL_EVENTS_MAILGUN_SIGNING_KEY;
  if (mailgun !== undefined && (mailgun.trim().length < MIN_MAILGUN_SIGNING_KEY_LENGTH || PUBLISHED_EMAIL_EVENT_SECRETS.has(mailgun))) {
    refuse(`EMAIL_EVENTS_MAILGUN_SIGNING_KEY must be at least ${MIN_MAILGUN_SIGNING_KEY_LENGTH} characters and not a published value`);
  }
  const postmark = raw.EMAIL_EVENTS_POSTMARK_AUTH;
  if (postmark !== undefined) {
    const password = postmark.slice(postmark.indexOf(':') + 1);
    if (password.length < MIN_POSTMARK_PASSWORD_LENGTH || PUBLISHED_SECRETS.has(password) || PUBLISHED_EMAIL_EVENT_SECRETS.has(password)) {
      refuse(`EMAIL_EVENTS_POSTMARK_AUTH needs a password of at least ${MIN_POSTMARK_PASSWORD_LENGTH} characters, not a published value`);
    }
  }
  const resend = raw.EMAIL_EVENTS_RESEND_SECRET;
  if (
    resend !== undefined &&
    ((resendSecretBytes(resend) ?? 0) < MIN_RESEND_SECRET_BYTES || PUBLISHED_EMAIL_EVENT_SECRETS.has(resend.trim()))
  ) {
    refuse(`EMAIL_EVENTS_RESEND_SECRET must decode to at least ${MIN_RESEND_SECRET_BYTES} bytes and not be a published example`);
  }
}

/** Outside production: the development defaults in use, for one warning at start. */
export function developmentDefaultsInUse(config: Config): string[] {
  const names: string[] = [];
  if (config.PAYMENT_WEBHOOK_SECRET === DEV_WEBHOOK_SECRET) names.push('PAYMENT_WEBHOOK_SECRET');
  if (config.LINK_SECRET === DEV_LINK_SECRET) names.push('LINK_SECRET');
  return names;
}

export type TrustProxy = boolean | number | string[];

/** TRUST_PROXY → Fastify's `trustProxy`: false, true, a hop count, or a list of addresses/CIDRs. */
export function trustProxySetting(value: string): TrustProxy {
  const text = value.trim().toLowerCase();
  if (text === 'false') return false;
  if (text === 'true') return true;
  if (/^[0-9]+$/.test(text)) return Number(text);
  const entries = text
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean);
  for (const entry of entries) {
    const [address, bits, extra] = entry.split('/');
    const family = isIP(address ?? '');
    const maxBits = family === 6 ? 128 : 32;
    const validBits = bits === undefined || (/^[0-9]{1,3}$/.test(bits) && Number(bits) <= maxBits);
    if (family === 0 || !validBits || extra !== undefined) {
      throw new ConfigError(
        `invalid configuration: TRUST_PROXY must be true, false, a hop count or a comma-separated list of addresses/CIDRs (bad entry ${JSON.stringify(entry)})`,
      );
    }
  }
  if (entries.length === 0) throw new ConfigError('invalid configuration: TRUST_PROXY is empty');
  return entries;
}
