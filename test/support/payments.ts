import { createHmac, randomBytes } from 'node:crypto';
import type { App } from '../../src/app.js';

export const WEBHOOK_SECRET = 'test-webhook-secret-0123456789abcdef';
export const LINK_SECRET = 'test-link-secret-0123456789abcdef';

/** Signs as the contract says, independently of errand's own code: HMAC-SHA256 over `${t}.${rawBody}`. */
export function signatureHeader(rawBody: string | Buffer, options: { secret?: string; timestamp?: number } = {}): string {
  const t = options.timestamp ?? Math.floor(Date.now() / 1000);
  const hex = createHmac('sha256', options.secret ?? WEBHOOK_SECRET)
    .update(`${t}.`)
    .update(rawBody)
    .digest('hex');
  return `t=${t},v1=${hex}`;
}

export function eventId(): string {
  return `evt_${randomBytes(8).toString('hex')}`;
}

export interface CreatedOrder {
  id: string;
  status: string;
  amount: number;
  currency: string;
  providerRef: string;
  createdAt: string;
}

export async function createOrder(app: App, body: { email: string; amount?: number; currency?: string }): Promise<CreatedOrder> {
  const res = await app.inject({ method: 'POST', url: '/orders', payload: { amount: 1999, currency: 'USD', ...body } });
  if (res.statusCode !== 201) throw new Error(`POST /orders answered ${res.statusCode}: ${res.body}`);
  return res.json<CreatedOrder>();
}

export function paymentEvent(order: { providerRef: string; amount: number; currency: string }, type = 'payment.succeeded', id = eventId()) {
  return { id, type, data: { providerRef: order.providerRef, amount: order.amount, currency: order.currency } };
}

/** Posts `body` (an object is serialised once; the same bytes are signed and sent). */
export async function sendWebhook(
  app: App,
  body: unknown,
  options: { header?: string | null; timestamp?: number; secret?: string; sendBody?: string | Buffer } = {},
) {
  const raw = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const header = options.header === undefined ? signatureHeader(raw, options) : options.header;
  if (header !== null) headers['webhook-signature'] = header;
  return app.inject({ method: 'POST', url: '/payments/webhook', headers, payload: options.sendBody ?? raw });
}

/** Standard Webhooks headers, computed independently of errand's code: HMAC-SHA256 over `${id}.${ts}.${body}`, key = base64 part of `whsec_…`. */
export function standardWebhookHeaders(
  rawBody: string | Buffer,
  options: { secret: string; id: string; timestamp?: number },
): Record<string, string> {
  const ts = options.timestamp ?? Math.floor(Date.now() / 1000);
  const key = options.secret.startsWith('whsec_') ? Buffer.from(options.secret.slice(6), 'base64') : Buffer.from(options.secret);
  const signature = createHmac('sha256', key).update(`${options.id}.${ts}.`).update(rawBody).digest('base64');
  return { 'webhook-id': options.id, 'webhook-timestamp': String(ts), 'webhook-signature': `v1,${signature}` };
}

/** Posts `raw` with exactly `headers` (plus a JSON content type). */
export function postWebhook(app: App, raw: string, headers: Record<string, string>) {
  return app.inject({
    method: 'POST',
    url: '/payments/webhook',
    headers: { 'content-type': 'application/json', ...headers },
    payload: raw,
  });
}
