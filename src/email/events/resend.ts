import { createWebhookVerifier, SIGNATURE_HEADER, WEBHOOK_ID_HEADER, WEBHOOK_TIMESTAMP_HEADER } from '../../core/webhook-signature.js';
import { addressOf, header, isObject, parseJson, refuse, timeOf, type EmailEvent, type EmailEventReceiver } from './types.js';

/**
 * Resend: Standard Webhooks, as Svix sends it (`svix-id`, `svix-timestamp`, `svix-signature`) or under the
 * `webhook-*` names; the verifier is the payment webhook's. `email.bounced` → hard (soft when
 * `data.bounce.type` is `Transient`), `email.complained` → complaint, one event per `data.to` address.
 */
export function createResendReceiver(secret: string): EmailEventReceiver {
  const verifier = createWebhookVerifier([secret]);
  return {
    provider: 'resend',
    async receive({ headers, rawBody, nowMs }) {
      const id = header(headers, WEBHOOK_ID_HEADER) ?? header(headers, 'svix-id');
      const standard = {
        [WEBHOOK_ID_HEADER]: id,
        [WEBHOOK_TIMESTAMP_HEADER]: header(headers, WEBHOOK_TIMESTAMP_HEADER) ?? header(headers, 'svix-timestamp'),
        [SIGNATURE_HEADER]: header(headers, SIGNATURE_HEADER) ?? header(headers, 'svix-signature'),
      };
      const check = verifier.verify(standard, rawBody, nowMs);
      if (!check.ok) return refuse(401, check.message.replaceAll(SIGNATURE_HEADER, 'svix-signature/webhook-signature'));
      // Only Standard Webhooks: the payment webhook's other scheme (t=…,v1=<hex>) is not Resend's.
      if (check.scheme !== 'standard-webhooks' || !id) return refuse(401, 'not a Standard Webhooks signature');

      const parsed = parseJson(rawBody);
      if (!parsed.ok || !isObject(parsed.value)) return refuse(400, 'body is not a JSON object');
      const { type, data, created_at: createdAt } = parsed.value;
      const now = new Date(nowMs);
      const kind =
        type === 'email.bounced'
          ? isObject(data) && isObject(data.bounce) && data.bounce.type === 'Transient'
            ? 'soft_bounce'
            : 'hard_bounce'
          : type === 'email.complained'
            ? 'complaint'
            : 'ignored';
      if (kind === 'ignored') return { ok: true, events: [{ provider: 'resend', eventId: '', email: '', kind, at: now }] };
      if (!isObject(data)) return refuse(400, 'missing data');
      const recipients = Array.isArray(data.to) ? data.to : [data.to];
      const events: EmailEvent[] = [];
      for (const recipient of recipients) {
        const email = addressOf(recipient);
        if (!email) return refuse(400, 'data.to holds no valid address');
        events.push({ provider: 'resend', eventId: `${id}|${email}`, email, kind, at: timeOf(createdAt, now) });
      }
      if (events.length === 0) return refuse(400, 'data.to is empty');
      return { ok: true, events };
    },
  };
}
