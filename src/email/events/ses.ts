import { createPublicKey, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { get } from 'node:https';
import { addressOf, idOf, isObject, isStale, parseJson, refuse, timeOf, type EmailEvent, type EmailEventReceiver } from './types.js';
import type { EmailEventKind } from '../../db/suppressions.js';

export const DEFAULT_SNS_CERT_HOST = '^sns\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?$';

export interface SnsFetchOptions {
  /** The host of a SigningCertURL or SubscribeURL must match this (EMAIL_EVENTS_SNS_CERT_HOST). */
  hostPattern: RegExp;
  timeoutMs?: number;
  maxBytes?: number;
  /** Extra trusted CA for the HTTPS fetch (tests serve the certificate from their own CA). */
  ca?: string | Buffer;
}

/** An https:// URL whose host matches the pattern; anything else is never fetched. */
export function trustedUrl(value: unknown, hostPattern: RegExp): URL | undefined {
  if (typeof value !== 'string') return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'https:' || url.username || url.password || !hostPattern.test(url.hostname)) return undefined;
  return url;
}

/** GET over https with a deadline and a size limit; rejects on a non-200 answer. */
export function fetchHttps(url: URL, options: SnsFetchOptions): Promise<Buffer> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const maxBytes = options.maxBytes ?? 64 * 1024;
  return new Promise((resolve, reject) => {
    const request = get(url, { timeout: timeoutMs, ...(options.ca ? { ca: options.ca } : {}) }, (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        reject(new Error(`${url.host} answered ${response.statusCode}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) {
          request.destroy(new Error(`${url.host} sent more than ${maxBytes} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      response.on('end', () => resolve(Buffer.concat(chunks)));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`${url.host} did not answer within ${timeoutMs} ms`)));
    request.on('error', reject);
  });
}

/** Signing certificates by URL: fetched once (concurrent callers share the fetch), a failed fetch is not kept. */
export function createCertificateCache(options: SnsFetchOptions, maxEntries = 32) {
  const cache = new Map<string, Promise<KeyObject>>();
  return {
    fetches: 0,
    get(url: URL): Promise<KeyObject> {
      const key = url.href;
      let entry = cache.get(key);
      if (!entry) {
        this.fetches += 1;
        entry = fetchHttps(url, options).then((pem) =>
          createPublicKey(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'pem' })),
        );
        entry.catch(() => cache.delete(key));
        if (cache.size >= maxEntries) cache.delete(cache.keys().next().value!);
        cache.set(key, entry);
      }
      return entry;
    },
  };
}

const NOTIFICATION_FIELDS = ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type'] as const;
const CONFIRMATION_FIELDS = ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type'] as const;

/** SNS's string to sign: `name\nvalue\n` for each field in order; Subject only when present. */
export function snsStringToSign(message: Record<string, unknown>): string | undefined {
  const fields = message.Type === 'Notification' ? NOTIFICATION_FIELDS : CONFIRMATION_FIELDS;
  let text = '';
  for (const name of fields) {
    const value = message[name];
    if (value === undefined && name === 'Subject') continue;
    if (typeof value !== 'string') return undefined;
    text += `${name}\n${value}\n`;
  }
  return text;
}

function bounceKind(bounceType: unknown): EmailEventKind {
  if (bounceType === 'Permanent') return 'hard_bounce';
  if (bounceType === 'Transient' || bounceType === 'Undetermined') return 'soft_bounce';
  return 'ignored';
}

/** The SES notification inside an SNS Message: Bounce (per bouncedRecipients) and Complaint (per complainedRecipients). */
function sesEvents(messageId: string, message: string, fallback: Date): EmailEvent[] | string {
  const parsed = parseJson(Buffer.from(message, 'utf8'));
  const ignored: EmailEvent[] = [{ provider: 'ses', eventId: '', email: '', kind: 'ignored', at: fallback }];
  if (!parsed.ok || !isObject(parsed.value)) return ignored;
  const note = parsed.value;
  // Notifications say notificationType; event publishing (configuration sets) says eventType.
  const type = note.notificationType ?? note.eventType;
  let recipients: unknown;
  let kind: EmailEventKind;
  let at: Date;
  if (type === 'Bounce' && isObject(note.bounce)) {
    kind = bounceKind(note.bounce.bounceType);
    recipients = note.bounce.bouncedRecipients;
    at = timeOf(note.bounce.timestamp, fallback);
  } else if (type === 'Complaint' && isObject(note.complaint)) {
    kind = 'complaint';
    recipients = note.complaint.complainedRecipients;
    at = timeOf(note.complaint.timestamp, fallback);
  } else return ignored;
  if (kind === 'ignored') return ignored;
  if (!Array.isArray(recipients) || recipients.length === 0) return `${String(type)} notification without recipients`;
  const events: EmailEvent[] = [];
  for (const recipient of recipients) {
    const email = isObject(recipient) ? addressOf(recipient.emailAddress) : undefined;
    if (!email) return `${String(type)} recipient without a valid emailAddress`;
    events.push({ provider: 'ses', eventId: `${messageId}|${email}`, email, kind, at });
  }
  return events;
}

export interface SesReceiverOptions extends SnsFetchOptions {
  topicArns: readonly string[];
}

/**
 * Amazon SES through SNS: the message's signature (version 1 SHA1, 2 SHA256) checked with the certificate at
 * SigningCertURL, fetched only over https from a host matching the pattern, and cached; TopicArn must be listed.
 * A SubscriptionConfirmation is confirmed by fetching its SubscribeURL (trusted host only).
 */
export function createSesReceiver(options: SesReceiverOptions) {
  const certificates = createCertificateCache(options);
  const topics = new Set(options.topicArns);
  const receiver: EmailEventReceiver & { certificates: typeof certificates } = {
    provider: 'ses',
    certificates,
    async receive({ rawBody, nowMs }) {
      const parsed = parseJson(rawBody);
      if (!parsed.ok || !isObject(parsed.value)) return refuse(400, 'body is not a JSON object');
      const message = parsed.value;
      const { Type: type, TopicArn: topicArn, SignatureVersion: version, Signature: signature } = message;
      if (type !== 'Notification' && type !== 'SubscriptionConfirmation' && type !== 'UnsubscribeConfirmation') {
        return refuse(400, 'Type is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation');
      }
      if (typeof topicArn !== 'string' || !topics.has(topicArn)) return refuse(401, 'TopicArn is not one errand accepts');
      const certUrl = trustedUrl(message.SigningCertURL, options.hostPattern);
      if (!certUrl) return refuse(401, 'SigningCertURL is not https:// on a trusted host');
      if (version !== '1' && version !== '2') return refuse(401, 'SignatureVersion is not 1 or 2');
      if (typeof signature !== 'string' || !/^[A-Za-z0-9+/=]{16,2048}$/.test(signature))
        return refuse(401, 'missing or malformed Signature');
      const stringToSign = snsStringToSign(message);
      const messageId = idOf(message.MessageId);
      if (stringToSign === undefined || !messageId) return refuse(400, 'a field SNS signs is missing');
      const timestamp = Date.parse(String(message.Timestamp));
      if (isStale(timestamp / 1000, nowMs)) return refuse(401, 'Timestamp is not within 300 s of now');

      let key: KeyObject;
      try {
        key = await certificates.get(certUrl);
      } catch {
        // Unreachable or not a certificate: SNS retries a 5xx, and nothing was accepted unverified.
        return refuse(502, 'could not fetch the signing certificate');
      }
      const algorithm = version === '1' ? 'sha1' : 'sha256';
      if (!verify(algorithm, Buffer.from(stringToSign, 'utf8'), key, Buffer.from(signature, 'base64'))) {
        return refuse(401, 'Signature does not match the message');
      }

      if (type === 'SubscriptionConfirmation') {
        const subscribeUrl = trustedUrl(message.SubscribeURL, options.hostPattern);
        if (!subscribeUrl) return refuse(401, 'SubscribeURL is not https:// on a trusted host');
        try {
          await fetchHttps(subscribeUrl, options);
        } catch {
          return refuse(502, 'could not confirm the subscription');
        }
        return { ok: true, events: [], note: 'SNS subscription confirmed' };
      }
      if (type === 'UnsubscribeConfirmation') return { ok: true, events: [], note: 'SNS unsubscribe confirmation received' };
      const events = sesEvents(messageId, String(message.Message), new Date(timestamp));
      if (typeof events === 'string') return refuse(400, events);
      return { ok: true, events };
    },
  };
  return receiver;
}
