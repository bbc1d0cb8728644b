import { Type, type Static } from 'typebox';
import type { Db } from '../core/db.js';
import type { OutboxRow } from '../outbox/producer.js';
import { findOrderByProviderRef, markPaymentEventTransitioned, recordPaymentEvent } from './repository.js';
import { settleOrder, type PaymentOutcome } from './transitions.js';

// The literals written out: a Type.Union over `.map()` gets a plain array type, and Static<> of it is never.
export const PaymentEventTypeSchema = Type.Union([Type.Literal('payment.succeeded'), Type.Literal('payment.failed'), Type.Literal('payment.expired')]);
export type PaymentEventType = Static<typeof PaymentEventTypeSchema>;
export const PAYMENT_EVENT_TYPES: readonly PaymentEventType[] = PaymentEventTypeSchema.anyOf.map((literal) => literal.const);

// Strict like every body (CONTRACT.md): no coercion, unknown properties rejected.
export const PaymentEventSchema = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 255 }),
  type: PaymentEventTypeSchema,
  data: Type.Object({
    providerRef: Type.String({ minLength: 1, maxLength: 255 }),
    amount: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    currency: Type.String({ pattern: '^[A-Z]{3}$' }),
  }, { additionalProperties: false }),
}, { additionalProperties: false });
export type PaymentEvent = Static<typeof PaymentEventSchema>;

export type PaymentEventResult =
  | { kind: 'duplicate' }
  | { kind: 'unknown-order' }
  | { kind: 'mismatch'; orderId: string; expected: { amount: number; currency: string } }
  | { kind: 'applied'; orderId: string; transitioned: boolean; outboxRows: OutboxRow[] };

/** Thrown inside the transaction to roll back the recorded event id. */
class AmountMismatch extends Error {
  constructor(readonly result: Extract<PaymentEventResult, { kind: 'mismatch' }>) {
    super('amount or currency mismatch');
  }
}

function outcomeOf(type: PaymentEventType): PaymentOutcome {
  return type === 'payment.succeeded' ? 'succeeded' : type === 'payment.failed' ? 'failed' : 'expired';
}

/**
 * Applies one verified webhook event in one transaction: record the event id
 * (a replay stops here), check amount and currency, settle the order. A
 * mismatch rolls everything back, event id included, so a corrected delivery
 * of the same event can still apply. The caller publishes `outboxRows` after commit.
 */
export async function processPaymentEvent(db: Db, event: PaymentEvent): Promise<PaymentEventResult> {
  try {
    return await db.transaction().execute(async (trx): Promise<PaymentEventResult> => {
      const order = await findOrderByProviderRef(trx, event.data.providerRef);
      const recorded = await recordPaymentEvent(trx, { eventId: event.id, type: event.type, providerRef: event.data.providerRef, orderId: order?.id ?? null });
      if (!recorded) return { kind: 'duplicate' };
      if (!order) return { kind: 'unknown-order' };
      if (order.amount !== event.data.amount || order.currency !== event.data.currency) {
        throw new AmountMismatch({ kind: 'mismatch', orderId: order.id, expected: { amount: order.amount, currency: order.currency } });
      }
      const settlement = await settleOrder(trx, { orderId: order.id, outcome: outcomeOf(event.type) });
      if (settlement.transitioned) await markPaymentEventTransitioned(trx, event.id);
      return { kind: 'applied', orderId: order.id, ...settlement };
    });
  } catch (error) {
    if (error instanceof AmountMismatch) return error.result;
    throw error;
  }
}
