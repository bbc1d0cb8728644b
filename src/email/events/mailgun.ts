import { createHmac, timingSafeEqual } from 'node:crypto';
import { addressOf, idOf, isObject, isStale, parseJson, refuse, timeOf, type EmailEventReceiver } from './types.js';
import type { EmailEventKind } from '../../db/suppressions.js';

function kindOf(data: Record<string, unknown>): EmailEventKind {
  if (data.event === 'failed') {
    if (data.severity === 'permanent') return 'hard_bounce';
    if (data.severity === 'temporary') return 'soft_bounce';
    return 'ignored';
  }
  return data.event === 'complained' ? 'complaint' : 'ignored';
}

/**
 * Mailgun webhooks (JSON): `{signature:{timestamp, token, signature}, "event-data":{…}}`, signature = hex
 * HMAC-SHA256 of timestamp + token with the webhook signing key. The token is good once (the caller stores it).
 */
export function createMailgunReceiver(signingKey: string): EmailEventReceiver {
  const key = Buffer.from(signingKey, 'utf8');
  return {
    provider: 'mailgun',
    async receive({ rawBody, nowMs }) {
      const parsed = parseJson(rawBody);
      if (!parsed.ok || !isObject(parsed.value)) return refuse(400, 'body is not a JSON object');
      const { signature: sig } = parsed.value;
      if (!isObject(sig)) return refuse(401, 'missing signature');
      const { timestamp, token, signature } = sig;
      if (typeof timestamp !== 'string' || !/^\d{1,12}$/.test(timestamp) || typeof token !== 'string' || typeof signature !== 'string') {
        return refuse(401, 'missing or malformed signature.timestamp, signature.token or signature.signature');
      }
      if (!/^[0-9a-fA-F]{64}$/.test(signature) || token.length < 1 || token.length > 256) return refuse(401, 'malformed signature');
      const expected = createHmac('sha256', key).update(timestamp).update(token).digest();
      if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) return refuse(401, 'signature does not match');
      if (isStale(Number(timestamp), nowMs)) return refuse(401, 'signature.timestamp is not within 300 s of now');

      const data = parsed.value['event-data'];
      if (!isObject(data)) return refuse(400, 'missing event-data');
      const signedAt = new Date(Number(timestamp) * 1000);
      const kind = kindOf(data);
      const tokenToStore = { token, signedAt };
      if (kind === 'ignored') {
        return { ok: true, token: tokenToStore, events: [{ provider: 'mailgun', eventId: '', email: '', kind, at: signedAt }] };
      }
      const eventId = idOf(data.id);
      const email = addressOf(data.recipient);
      if (!eventId || !email) return refuse(400, 'event-data lacks id or recipient');
      return {
        ok: true,
        token: tokenToStore,
        events: [{ provider: 'mailgun', eventId, email, kind, at: timeOf(data.timestamp, signedAt) }],
      };
    },
  };
}
