import type { IncomingHttpHeaders } from 'node:http';
import type { EmailEventKind } from '../../db/suppressions.js';

export const EMAIL_EVENT_PROVIDERS = ['ses', 'sendgrid', 'mailgun', 'postmark', 'resend'] as const;
export type EmailEventProvider = (typeof EMAIL_EVENT_PROVIDERS)[number];

/** One provider event, normalised: what errand stores and counts. */
export interface EmailEvent {
  provider: EmailEventProvider;
  /** Unique per event at the provider (its retries repeat it): a repeated delivery counts once. */
  eventId: string;
  /** Lower-cased. Empty for an ignored event that names no address. */
  email: string;
  kind: EmailEventKind;
  at: Date;
}

export interface ReceivedDelivery {
  headers: IncomingHttpHeaders;
  rawBody: Buffer;
  /** ms since the epoch; injectable for tests. */
  nowMs: number;
}

export type ReceiveResult =
  | {
      ok: true;
      events: EmailEvent[];
      /** A one-use token (Mailgun's): stored with the events, refused the second time. */
      token?: { token: string; signedAt: Date };
      /** What happened besides events, for the log line (e.g. `subscription confirmed`). */
      note?: string;
    }
  | { ok: false; status: 400 | 401 | 502; message: string };

/** One provider: verify the raw bytes and headers as that provider signs them, then parse its events. */
export interface EmailEventReceiver {
  provider: EmailEventProvider;
  receive(delivery: ReceivedDelivery): Promise<ReceiveResult>;
}

/** Signed timestamps further than this from our clock, either way, are refused. */
export const TIMESTAMP_TOLERANCE_S = 300;

export const refuse = (status: 400 | 401 | 502, message: string): ReceiveResult => ({ ok: false, status, message });

export function isStale(timestampSeconds: number, nowMs: number): boolean {
  return !Number.isFinite(timestampSeconds) || Math.abs(nowMs - timestampSeconds * 1000) > TIMESTAMP_TOLERANCE_S * 1000;
}

/** One header's single value, or undefined (absent, empty or repeated). */
export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

export function parseJson(rawBody: Buffer): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(rawBody.toString('utf8')) as unknown };
  } catch {
    return { ok: false };
  }
}

export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** A usable address: a string with an @, no control characters, at most 320 characters; lower-cased. */
export function addressOf(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const email = value.trim().toLowerCase();
  if (email.length < 3 || email.length > 320 || !email.includes('@')) return undefined;
  for (let i = 0; i < email.length; i += 1) {
    const code = email.charCodeAt(i);
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) return undefined;
  }
  return email;
}

/** An id errand stores: a non-empty string (or integer) without control characters, at most 512 characters. */
export function idOf(value: unknown): string | undefined {
  const id = typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : value;
  if (typeof id !== 'string' || id === '' || id.length > 512) return undefined;
  for (let i = 0; i < id.length; i += 1) {
    const code = id.charCodeAt(i);
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) return undefined;
  }
  return id;
}

/** A provider's time (ISO string or unix seconds), or the fallback when it gives none that parses. */
export function timeOf(value: unknown, fallback: Date): Date {
  const ms = typeof value === 'number' ? value * 1000 : typeof value === 'string' ? Date.parse(value) : NaN;
  return Number.isFinite(ms) ? new Date(ms) : fallback;
}
