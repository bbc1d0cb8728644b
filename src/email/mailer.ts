import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';

export interface OutgoingEmail {
  to: string;
  subject: string;
  text: string;
  html: string;
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
      await writeFile(path.join(options.mailDir, `${Date.now()}-${fileStem}.eml`), info.message as Buffer);
    },
    close: () => transport.close(),
  };
}

export type SmtpFailure =
  | { kind: 'throttle'; retryAfterMs?: number }
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
  const unit = match[2]!.toLowerCase();
  if (unit === 'ms' || unit.startsWith('milli')) return value;
  if (unit.startsWith('m')) return value * 60_000;
  return value * 1000;
}

/**
 * The contract's classification of a failed send: throttling replies (421,
 * 450/451/452 worded as a rate limit, a provider's 429) pause the queue; other
 * 5xx replies are permanent; everything else (4xx, dropped connections) is retried.
 */
export function classifySmtpError(error: unknown): SmtpFailure {
  const { responseCode, response } = (error ?? {}) as { responseCode?: number; response?: string };
  const reply = response ?? '';
  if (responseCode === 421 || responseCode === 429 || ((responseCode === 450 || responseCode === 451 || responseCode === 452) && RATE_WORDING.test(reply))) {
    const retryAfterMs = parseRetryAfterMs(reply);
    return retryAfterMs === undefined ? { kind: 'throttle' } : { kind: 'throttle', retryAfterMs };
  }
  if (typeof responseCode === 'number' && responseCode >= 500 && responseCode < 600) return { kind: 'permanent' };
  return { kind: 'transient' };
}
