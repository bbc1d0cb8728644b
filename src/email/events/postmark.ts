import { secretsEqual } from '../../ops/auth.js';
import type { EmailEventKind } from '../../db/suppressions.js';
import { addressOf, header, idOf, isObject, refuse, timeOf, type EmailEventReceiver } from './types.js';

const HARD = new Set(['HardBounce', 'BadEmailAddress']);
const SOFT = new Set(['SoftBounce', 'Transient', 'DnsError']);

function kindOf(body: Record<string, unknown>): EmailEventKind {
  if (body.RecordType === 'SpamComplaint') return 'complaint';
  if (body.RecordType !== 'Bounce') return 'ignored';
  if (typeof body.Type !== 'string') return 'ignored';
  if (HARD.has(body.Type)) return 'hard_bounce';
  if (SOFT.has(body.Type)) return 'soft_bounce';
  return body.Type === 'SpamComplaint' ? 'complaint' : 'ignored';
}

/**
 * Postmark's bounce and spam complaint webhooks, behind HTTP Basic (`user:password` compared in constant time).
 * Postmark's `ID` is a 64-bit integer: read from the text, since JSON.parse would round it past 2^53.
 */
export function createPostmarkReceiver(auth: string): EmailEventReceiver {
  return {
    provider: 'postmark',
    async receive({ headers, rawBody, nowMs }) {
      const match = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header(headers, 'authorization') ?? '');
      const given = match ? Buffer.from(match[1], 'base64').toString('utf8') : '';
      if (!secretsEqual(given, auth)) return refuse(401, 'missing or wrong HTTP Basic credentials');

      // Integer values of "ID" keys become strings (a key can only follow `{` or `,` outside a string).
      const text = rawBody.toString('utf8').replace(/([{,]\s*"ID"\s*:\s*)(-?\d+)(?=\s*[,}])/g, '$1"$2"');
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        return refuse(400, 'body is not valid JSON');
      }
      if (!isObject(body)) return refuse(400, 'body is not a JSON object');
      const now = new Date(nowMs);
      const kind = kindOf(body);
      if (kind === 'ignored') return { ok: true, events: [{ provider: 'postmark', eventId: '', email: '', kind, at: now }] };
      const eventId = idOf(body.ID);
      const email = addressOf(body.Email);
      if (!eventId || !email) return refuse(400, 'a bounce or complaint lacks ID or Email');
      return { ok: true, events: [{ provider: 'postmark', eventId, email, kind, at: timeOf(body.BouncedAt, now) }] };
    },
  };
}
