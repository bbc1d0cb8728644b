import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { SafeString, firstValidationError, type SchemaError } from '../core/schemas.js';
import { recordPaymentEvent } from '../db/orders.js';
import type { Db } from '../db/schema.js';
import { settlePayment, type PaymentOutcome, type SettleResult, type TransitionDeps } from './transitions.js';

// The literals written out: a Type.Union over `.map()` gets a plain array type, and Static<> of it is never.
export const PaymentEventTypeSchema = Type.Union([
  Type.Literal('payment.succeeded'),
  Type.Literal('payment.failed'),
  Type.Literal('payment.expired'),
]);
export type PaymentEventType = Static<typeof PaymentEventTypeSchema>;
export const PAYMENT_EVENT_TYPES: readonly PaymentEventType[] = PaymentEventTypeSchema.anyOf.map((literal) => literal.const);

// No control characters (a NUL would reach PostgreSQL as a 500): SafeString, here and for providerRef.
const EventIdSchema = SafeString({ minLength: 1, maxLength: 255 });

// The one exception to strict bodies (CONTRACT.md): the provider adds properties to its events without notice,
// so unknown properties are accepted and ignored at every depth (TypeBox objects allow them unless told not to).
// Every field errand reads stays strictly typed, without coercion.

/** What every event must have, whatever its type: errand records any event by id. */
export const PaymentEventEnvelopeSchema = Type.Object({
  id: Type.Optional(EventIdSchema),
  // Stored for an unknown type too (payment_events.type): SafeString, so a NUL is a 400, not PostgreSQL's 500.
  type: SafeString({ minLength: 1, maxLength: 255 }),
});

/** An event errand acts on. `id` may come from the `webhook-id` header instead. */
export const PaymentEventSchema = Type.Object({
  id: Type.Optional(EventIdSchema),
  type: PaymentEventTypeSchema,
  data: Type.Object({
    providerRef: SafeString({ minLength: 1, maxLength: 255 }),
    amount: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    currency: Type.String({ pattern: '^[A-Z]{3}$' }),
  }),
});
export type PaymentEvent = Static<typeof PaymentEventSchema>;

/** A providerRef an ignored event may carry, recorded alongside its id when it is a usable string. */
const OptionalProviderRefSchema = Type.Object({ data: Type.Object({ providerRef: SafeString({ minLength: 1, maxLength: 255 }) }) });

export type ParsedEvent =
  | { kind: 'invalid'; message: string }
  | { kind: 'handled'; id: string; event: PaymentEvent }
  | { kind: 'ignored'; id: string; type: string; providerRef: string | null };

// Compiled once: interpreting a schema per request (Value.Check) cost ~13 µs a check here, a compiled one ~0.1 µs.
const envelope = Compile(PaymentEventEnvelopeSchema);
const eventId = Compile(EventIdSchema);
const optionalProviderRef = Compile(OptionalProviderRefSchema);
const handledEvent = Compile(PaymentEventSchema);

function firstError(validator: { Errors(value: unknown): Iterable<SchemaError> }, body: unknown): string {
  return firstValidationError(validator.Errors(body));
}

/**
 * Checks a parsed JSON body. The event id is the body's `id`, else the
 * `webhook-id` header (Standard Webhooks); neither is a 400.
 */
export function parsePaymentEvent(body: unknown, webhookId: string | undefined): ParsedEvent {
  if (!envelope.Check(body)) return { kind: 'invalid', message: firstError(envelope, body) };
  const id = body.id ?? webhookId;
  if (id === undefined) return { kind: 'invalid', message: '/id is required when there is no webhook-id header' };
  if (!eventId.Check(id)) return { kind: 'invalid', message: `webhook-id ${firstError(eventId, id)}` };
  if (!(PAYMENT_EVENT_TYPES as readonly string[]).includes(body.type)) {
    const providerRef = optionalProviderRef.Check(body) ? body.data.providerRef : null;
    return { kind: 'ignored', id, type: body.type, providerRef };
  }
  if (!handledEvent.Check(body)) return { kind: 'invalid', message: firstError(handledEvent, body) };
  return { kind: 'handled', id, event: body };
}

export function outcomeOf(type: PaymentEventType): PaymentOutcome {
  return type === 'payment.succeeded' ? 'succeeded' : type === 'payment.failed' ? 'failed' : 'expired';
}

/** Applies one verified event through the exactly-once path (one statement: see transitions.ts). */
export function processPaymentEvent(deps: TransitionDeps, id: string, event: PaymentEvent): Promise<SettleResult> {
  return settlePayment(deps, {
    providerRef: event.data.providerRef,
    outcome: outcomeOf(event.type),
    amount: event.data.amount,
    currency: event.data.currency,
    event: { id, type: event.type },
  });
}

/** Records an event errand does not handle; false when its id was already recorded (a replay). */
export function recordIgnoredPaymentEvent(
  deps: { db: Db },
  ignored: { id: string; type: string; providerRef: string | null },
): Promise<boolean> {
  return recordPaymentEvent(deps.db, { eventId: ignored.id, type: ignored.type, providerRef: ignored.providerRef, orderId: null });
}
