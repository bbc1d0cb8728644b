import { Type, type Static } from 'typebox';
import { Value } from 'typebox/value';
import { firstValidationError } from '../core/schemas.js';

// Spelled out: a union built with `.map()` is an array type, and its Static<> would be `never`.
export const ProviderPaymentStatusSchema = Type.Union([
  Type.Literal('pending'),
  Type.Literal('succeeded'),
  Type.Literal('failed'),
  Type.Literal('expired'),
]);
export type ProviderPaymentStatus = Static<typeof ProviderPaymentStatusSchema>;

// What `GET /v1/payments/{providerRef}` answers with 200. Extra properties are tolerated (a provider may add fields); types are not coerced.
export const ProviderPaymentSchema = Type.Object({
  providerRef: Type.String({ minLength: 1 }),
  status: ProviderPaymentStatusSchema,
  amount: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  currency: Type.String({ pattern: '^[A-Z]{3}$' }),
});
export type ProviderPayment = Static<typeof ProviderPaymentSchema>;

/**
 * One lookup, classified. `transient` (429, 5xx, timeout, network) is worth
 * asking again later; `invalid` (another 4xx, a body that breaks the contract)
 * needs a human. Neither moves an order.
 */
export type PaymentLookup =
  | { kind: 'found'; status: ProviderPaymentStatus; amount: number; currency: string }
  | { kind: 'unknown' }
  | { kind: 'transient'; reason: string }
  | { kind: 'invalid'; reason: string };

export interface PaymentProvider {
  getPayment(providerRef: string): Promise<PaymentLookup>;
}

/** `undici` wraps the cause of a network failure; a timeout surfaces as a TimeoutError (or AbortError on older runtimes). */
function describeFetchError(error: unknown): string {
  const err = error as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'timeout';
  return `network: ${err.cause?.code ?? err.cause?.message ?? err.message ?? 'fetch failed'}`;
}

/** A client for the provider's HTTP API (the contract's `GET {base}/v1/payments/{providerRef}`), on global fetch. */
export function createHttpPaymentProvider(options: { baseUrl: string; timeoutMs: number }): PaymentProvider {
  const base = options.baseUrl.replace(/\/+$/, '');
  return {
    async getPayment(providerRef) {
      const url = `${base}/v1/payments/${encodeURIComponent(providerRef)}`;
      let response: Response;
      let body: unknown;
      try {
        // One signal for the whole exchange: a server that sends headers and then stalls still times out.
        response = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(options.timeoutMs) });
        if (response.status !== 200) {
          await response.body?.cancel();
        } else {
          const text = await response.text();
          try {
            body = JSON.parse(text);
          } catch {
            return { kind: 'invalid', reason: 'provider answered 200 with a body that is not JSON' };
          }
        }
      } catch (error) {
        return { kind: 'transient', reason: describeFetchError(error) };
      }
      if (response.status === 404) return { kind: 'unknown' };
      if (response.status === 429 || response.status >= 500) return { kind: 'transient', reason: `http ${response.status}` };
      if (response.status !== 200) return { kind: 'invalid', reason: `unexpected http ${response.status}` };
      if (!Value.Check(ProviderPaymentSchema, body)) {
        return {
          kind: 'invalid',
          reason: `provider body ${firstValidationError(Value.Errors(ProviderPaymentSchema, body), { root: '' })}`.trim(),
        };
      }
      if (body.providerRef !== providerRef) return { kind: 'invalid', reason: 'provider answered for another reference' };
      return { kind: 'found', status: body.status, amount: body.amount, currency: body.currency };
    },
  };
}
