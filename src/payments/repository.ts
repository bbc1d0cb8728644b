import type { Db, OrderStatus } from '../core/db.js';

export interface Order {
  id: string;
  email: string;
  amount: number;
  currency: string;
  status: OrderStatus;
  providerRef: string;
  paidAt: Date | null;
  createdAt: Date;
}

const ORDER_COLUMNS = ['id', 'email', 'amount', 'currency', 'status', 'provider_ref', 'paid_at', 'created_at'] as const;

function toOrder(row: { id: string; email: string; amount: string; currency: string; status: OrderStatus; provider_ref: string; paid_at: Date | null; created_at: Date }): Order {
  return {
    id: row.id,
    email: row.email,
    amount: Number(row.amount),
    currency: row.currency,
    status: row.status,
    providerRef: row.provider_ref,
    paidAt: row.paid_at,
    createdAt: row.created_at,
  };
}

export async function insertOrder(db: Db, order: { email: string; amount: number; currency: string; providerRef: string }): Promise<Order> {
  const row = await db
    .insertInto('orders')
    .values({ email: order.email, amount: order.amount, currency: order.currency, provider_ref: order.providerRef })
    .returning(ORDER_COLUMNS)
    .executeTakeFirstOrThrow();
  return toOrder(row);
}

/** `id` must be a uuid (PostgreSQL rejects anything else with an error, not an empty result). */
export async function findOrderById(db: Db, id: string): Promise<Order | undefined> {
  const row = await db.selectFrom('orders').select(ORDER_COLUMNS).where('id', '=', id).executeTakeFirst();
  return row && toOrder(row);
}

export async function findOrderByProviderRef(db: Db, providerRef: string): Promise<Order | undefined> {
  const row = await db.selectFrom('orders').select(ORDER_COLUMNS).where('provider_ref', '=', providerRef).executeTakeFirst();
  return row && toOrder(row);
}

/**
 * Records a webhook event id; false when it was already recorded. A concurrent
 * insert of the same id waits for the first transaction and then sees the conflict.
 */
export async function recordPaymentEvent(
  db: Db,
  event: { eventId: string; type: string; providerRef: string; orderId: string | null },
): Promise<boolean> {
  const row = await db
    .insertInto('payment_events')
    .values({ event_id: event.eventId, type: event.type, provider_ref: event.providerRef, order_id: event.orderId, transitioned: false })
    .onConflict((oc) => oc.column('event_id').doNothing())
    .returning('event_id')
    .executeTakeFirst();
  return row !== undefined;
}

export async function markPaymentEventTransitioned(db: Db, eventId: string): Promise<void> {
  await db.updateTable('payment_events').set({ transitioned: true }).where('event_id', '=', eventId).execute();
}
