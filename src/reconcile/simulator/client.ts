import type { PaymentLookup, PaymentProvider } from '../provider.js';
import type { ProviderSimulator } from './state.js';

/**
 * The simulator as an in-memory PaymentProvider (errand's default when PAYMENT_PROVIDER_URL is unset), classifying
 * answers exactly as the HTTP client does: found, unknown (404), transient (429/5xx, or no answer within the timeout).
 */
export function createSimulatorClient(sim: ProviderSimulator, options: { timeoutMs: number }): PaymentProvider {
  return {
    getPayment: async (providerRef): Promise<PaymentLookup> => {
      const signal = AbortSignal.timeout(options.timeoutMs);
      const timedOut = new Promise<{ status: 'timeout' }>((resolve) => signal.addEventListener('abort', () => resolve({ status: 'timeout' }), { once: true }));
      const answer = await Promise.race([sim.answer(providerRef, signal), timedOut]);
      switch (answer.status) {
        case 200:
          return { kind: 'found', status: answer.payment.status, amount: answer.payment.amount, currency: answer.payment.currency };
        case 404:
          return { kind: 'unknown' };
        case 'timeout':
          // A "timeout" answer from the simulator still costs the caller its whole timeout, as over HTTP.
          await timedOut;
          return { kind: 'transient', reason: 'timeout' };
        default:
          return { kind: 'transient', reason: `http ${answer.status}` };
      }
    },
  };
}
