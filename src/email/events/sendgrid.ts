import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import {
  addressOf,
  header,
  idOf,
  isObject,
  isStale,
  parseJson,
  refuse,
  timeOf,
  type EmailEvent,
  type EmailEventReceiver,
} from './types.js';
import type { EmailEventKind } from '../../db/suppressions.js';

export const SENDGRID_SIGNATURE_HEADER = 'x-twilio-email-event-webhook-signature';
export const SENDGRID_TIMESTAMP_HEADER = 'x-twilio-email-event-webhook-timestamp';

/** The Event Webhook's verification key as SendGrid shows it: base64 of the DER (SPKI) public key, ECDSA P-256. */
export function sendgridPublicKey(base64: string): KeyObject {
  const key = createPublicKey({ key: Buffer.from(base64.trim(), 'base64'), format: 'der', type: 'spki' });
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('not an ECDSA P-256 key');
  return key;
}

function kindOf(event: Record<string, unknown>): EmailEventKind {
  switch (event.event) {
    // A bounce of type `blocked` is a temporary refusal by the receiving server.
    case 'bounce':
      return event.type === 'blocked' ? 'soft_bounce' : 'hard_bounce';
    case 'blocked':
    case 'deferred':
      return 'soft_bounce';
    case 'spamreport':
      return 'complaint';
    default:
      return 'ignored';
  }
}

/** SendGrid's signed Event Webhook: a JSON array of events, ECDSA P-256 / SHA-256 over timestamp + raw body. */
export function createSendgridReceiver(publicKey: KeyObject): EmailEventReceiver {
  return {
    provider: 'sendgrid',
    async receive({ headers, rawBody, nowMs }) {
      const signature = header(headers, SENDGRID_SIGNATURE_HEADER);
      const timestamp = header(headers, SENDGRID_TIMESTAMP_HEADER);
      if (!signature || !timestamp) return refuse(401, `missing ${SENDGRID_SIGNATURE_HEADER} or ${SENDGRID_TIMESTAMP_HEADER} header`);
      if (!/^\d{1,12}$/.test(timestamp) || isStale(Number(timestamp), nowMs)) {
        return refuse(401, `${SENDGRID_TIMESTAMP_HEADER} is not within 300 s of now`);
      }
      const signed = Buffer.concat([Buffer.from(timestamp, 'utf8'), rawBody]);
      let valid: boolean;
      try {
        valid = verify('sha256', signed, { key: publicKey, dsaEncoding: 'der' }, Buffer.from(signature, 'base64'));
      } catch {
        valid = false;
      }
      if (!valid) return refuse(401, `${SENDGRID_SIGNATURE_HEADER} does not match the body`);

      const parsed = parseJson(rawBody);
      if (!parsed.ok || !Array.isArray(parsed.value)) return refuse(400, 'body is not a JSON array of events');
      const now = new Date(nowMs);
      const events: EmailEvent[] = [];
      for (const [index, item] of parsed.value.entries()) {
        if (!isObject(item)) return refuse(400, `event ${index} is not an object`);
        const kind = kindOf(item);
        if (kind === 'ignored') {
          events.push({ provider: 'sendgrid', eventId: '', email: '', kind, at: now });
          continue;
        }
        const email = addressOf(item.email);
        const messageId = idOf(item.sg_message_id) ?? idOf(item.sg_event_id);
        const time = typeof item.timestamp === 'number' ? item.timestamp : undefined;
        if (!email || !messageId || time === undefined) return refuse(400, `event ${index} lacks email, sg_message_id or timestamp`);
        events.push({
          provider: 'sendgrid',
          eventId: `${messageId}|${String(item.event)}|${email}|${time}`,
          email,
          kind,
          at: timeOf(time, now),
        });
      }
      return { ok: true, events };
    },
  };
}
