import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';

export interface OutgoingEmail {
  to: string;
  subject: string;
  text: string;
  html: string;
  /** The `Message-ID` header, `<…@…>` (emailMessageId); nodemailer makes a random one when absent. */
  messageId?: string;
}

export interface Mailer {
  /** Resolves once the SMTP server accepted the message (or the `.eml` file is written). */
  send(email: OutgoingEmail, fileStem: string): Promise<void>;
  close(): void;
}

/** `SMTP_URL` set → SMTP; unset → one `.eml` file per email under `mailDir`, for local development. */
export function createMailer(options: { smtpUrl?: string; from: string; mailDir: string; maxConnections?: number }): Mailer {
  if (options.smtpUrl) {
    const url = new URL(options.smtpUrl);
    const defaults = {
      // Timeouts well under the job lock, so a hung server fails the attempt instead of stalling it.
      connectionTimeout: '10000',
      greetingTimeout: '10000',
      socketTimeout: '30000',
      // Pooled: a new connection per message (TCP, greeting, EHLO, QUIT) cost ~110 ms against ~4 ms on a
      // reused one here. One connection per concurrent job; the pool reconnects when the server drops one.
      pool: 'true',
      maxConnections: String(options.maxConnections ?? 1),
    };
    for (const [key, value] of Object.entries(defaults)) {
      if (!url.searchParams.has(key)) url.searchParams.set(key, value);
    }
    const transport = nodemailer.createTransport(url.toString(), { from: options.from });
    return {
      async send(email) {
        await transport.sendMail(email);
      },
      close: () => transport.close(),
    };
  }
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'unix' }, { from: options.from });
  return {
    async send(email, fileStem) {
      const info = await transport.sendMail(email);
      await mkdir(options.mailDir, { recursive: true });
      await writeFile(path.join(options.mailDir, `${Date.now()}-${safeFileStem(fileStem)}.eml`), info.message as Buffer);
    },
    close: () => transport.close(),
  };
}

/**
 * The right-hand side of errand's Message-IDs: the domain of MAIL_FROM's address (`errand <no-reply@example.com>`
 * → `example.com`), else PUBLIC_BASE_URL's host.
 */
export function messageIdDomain(mailFrom: string, publicBaseUrl: string): string {
  const match = /@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)\s*>?\s*$/.exec(mailFrom);
  if (match) return match[1].toLowerCase();
  try {
    return new URL(publicBaseUrl).hostname || 'localhost';
  } catch {
    return 'localhost';
  }
}

/**
 * The Message-ID of every attempt of one email job: derived from the job id alone, so a repeat (a process killed
 * between SMTP acceptance and the send's record) carries the same Message-ID as the first and a mailbox or a
 * provider can recognise it. Characters a Message-ID cannot hold are written `=XX` (hex), an id too long for a
 * header line is replaced by its SHA-256.
 */
export function emailMessageId(jobId: string, domain: string): string {
  let local = jobId.replace(/[^A-Za-z0-9_-]/g, (ch) => `=${Buffer.from(ch).toString('hex')}`);
  if (local.length > 200) local = `sha256-${createHash('sha256').update(jobId).digest('hex')}`;
  return `<email-${local}@${domain}>`;
}

/**
 * A file-name-safe form of a job id: job ids can be chosen by whoever adds a
 * job (Bull Board, a script), and `../x` must not name a path outside MAIL_DIR.
 */
export function safeFileStem(id: string): string {
  const stem = id.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 100);
  return stem || 'job';
}

export type SmtpFailure =
  | { kind: 'throttle'; retryAfterMs?: number }
  /** The SMTP server itself is unreachable or refuses errand (not this message): pause, spend no attempt. */
  | { kind: 'outage'; cause: string }
  | { kind: 'permanent' }
  | { kind: 'transient' };

// Words of a rate limit, not of any deferral: greylisting's "try again later" is an ordinary 4xx (retried).
const RATE_WORDING = /\brate\b|rate[ -]?limit|too many|throttl|slow down/i;
const RETRY_HINT = /(?:retry|try again)\s+(?:after|in)\s+(\d+)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)\b/i;

/** Reads a "try again in N seconds"-style hint from a server reply. */
export function parseRetryAfterMs(reply: string): number | undefined {
  const match = RETRY_HINT.exec(reply);
  if (!match) return undefined;
  const value = Number(match[1]);
  const unit = match[2].toLowerCase();
  if (unit === 'ms' || unit.startsWith('milli')) return value;
  if (unit.startsWith('m')) return value * 60_000;
  return value * 1000;
}

// Node's socket and DNS errors, and nodemailer's own codes for connection, greeting, TLS, DNS and login failures.
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'ECONNECTION',
  'ESOCKET',
  'EDNS',
  'ETLS',
  'EAUTH',
]);
// 530 authentication required, 534 mechanism too weak, 535 credentials invalid, 454 temporary auth failure.
const AUTH_REPLY_CODES = new Set([454, 530, 534, 535]);

/**
 * The contract's classification of a failed send: throttling replies (421 or
 * 450/451/452 worded as a rate limit or with a retry hint, a provider's 429)
 * pause the queue for the hinted time; a downstream outage (connection
 * refused/reset/timed out, DNS, TLS, 421 service not available, credentials
 * refused) pauses it with a growing delay; other 5xx replies are permanent;
 * everything else (a per-message 4xx) is retried with the backoff.
 */
export function classifySmtpError(error: unknown): SmtpFailure {
  const { responseCode, response, code } = (error ?? {}) as { responseCode?: number; response?: string; code?: string };
  const reply = response ?? '';
  const retryAfterMs = parseRetryAfterMs(reply);
  const rateWorded = RATE_WORDING.test(reply) || retryAfterMs !== undefined;
  if (
    responseCode === 429 ||
    ((responseCode === 421 || responseCode === 450 || responseCode === 451 || responseCode === 452) && rateWorded)
  ) {
    return retryAfterMs === undefined ? { kind: 'throttle' } : { kind: 'throttle', retryAfterMs };
  }
  if (responseCode === 421) return { kind: 'outage', cause: 'smtp-unavailable' };
  if ((typeof responseCode === 'number' && AUTH_REPLY_CODES.has(responseCode)) || code === 'EAUTH')
    return { kind: 'outage', cause: 'smtp-auth' };
  if (code && UNREACHABLE_CODES.has(code) && responseCode === undefined) return { kind: 'outage', cause: 'smtp-unreachable' };
  if (typeof responseCode === 'number' && responseCode >= 500 && responseCode < 600) return { kind: 'permanent' };
  return { kind: 'transient' };
}
