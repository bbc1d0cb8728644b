import { sql } from 'kysely';
import { createStatementBatcher } from './batch.js';
import type { DataLayer } from './pool.js';
import type { Db, OrderStatus } from './schema.js';
import { suppressionReasonOf, type SuppressionReason } from './suppressions.js';

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

function toOrder(row: {
  id: string;
  email: string;
  amount: string;
  currency: string;
  status: OrderStatus;
  provider_ref: string;
  paid_at: Date | null;
  created_at: Date;
}): Order {
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

/** An order as the tracking email reads it: with the suppression list's entry for its address (a reason), or null. */
export type OrderToEmail = Order & { suppressed: SuppressionReason | null };

/**
 * findOrderById for many concurrent callers (the tracking-link email jobs of one worker): the ids of one event-loop
 * turn share one statement (a read: no lock order). Each `id` must be a uuid, as for findOrderById: one that is not
 * would fail the whole statement (the job payload is checked for it before any job runs). The same statement says
 * whether the suppression list holds the order's address (folded in: no round trip of its own).
 */
export function prepareFindOrders(data: DataLayer): (id: string) => Promise<OrderToEmail | undefined> {
  // Compiled once, a named prepared statement: a worker runs it for every tracking-link email.
  const selectOrders = data.prepared.compile(['ids'], (params: { ids: string[] }, db) =>
    db
      .selectFrom('orders')
      .select(ORDER_COLUMNS)
      .select(suppressionReasonOf(sql.ref('orders.email')).as('suppressed'))
      .where(sql<boolean>`id = any(${params.ids}::uuid[])`),
  );
  return createStatementBatcher<string, OrderToEmail | undefined>(data, {
    maxBatch: 500,
    async run(ids) {
      const rows = await selectOrders({ ids });
      const byId = new Map(rows.map((row) => [row.id, row]));
      return ids.map((id) => {
        // PostgreSQL writes uuids in lower case; a payload may carry upper case (the same order).
        const row = byId.get(id.toLowerCase());
        return row && { ...toOrder(row), suppressed: row.suppressed };
      });
    },
  });
}

/**
 * Records a webhook event id that changes no order (an event type errand does
 * not handle); false when it was already recorded. Handled events are recorded
 * by the settle statement (settle-payment.ts).
 */
export async function recordPaymentEvent(
  db: Db,
  event: { eventId: string; type: string; providerRef: string | null; orderId: string | null },
): Promise<boolean> {
  const row = await db
    .insertInto('payment_events')
    .values({ event_id: event.eventId, type: event.type, provider_ref: event.providerRef, order_id: event.orderId, transitioned: false })
    .onConflict((oc) => oc.column('event_id').doNothing())
    .returning('event_id')
    .executeTakeFirst();
  return row !== undefined;
}

export interface PendingOrder {
  id: string;
  amount: number;
  currency: string;
  providerRef: string;
  /** When the sweep last asked the provider about it (null: never). */
  lastCheckedAt: Date | null;
}

/**
 * Pending orders created within the window, the least recently checked first
 * (never-checked ones before all others), then the oldest. Checking the oldest
 * first instead let orders the provider never settles (abandoned checkouts,
 * junk orders) fill every batch and starve the rest.
 */
export async function findPendingOrdersInWindow(db: Db, options: { windowHours: number; limit: number }): Promise<PendingOrder[]> {
  const rows = await db
    .selectFrom('orders')
    .select(['id', 'amount', 'currency', 'provider_ref', 'last_checked_at'])
    .where('status', '=', 'pending')
    .where('created_at', '>=', sql<Date>`now() - make_interval(secs => ${options.windowHours * 3600})`)
    .orderBy('last_checked_at', (order) => order.asc().nullsFirst())
    .orderBy('created_at')
    .orderBy('id')
    .limit(options.limit)
    .execute();
  return rows.map((row) => ({
    id: row.id,
    amount: Number(row.amount),
    currency: row.currency,
    providerRef: row.provider_ref,
    lastCheckedAt: row.last_checked_at,
  }));
}

/** Stamps the orders the sweep asked the provider about, in one statement. */
export async function recordOrdersChecked(db: Db, orderIds: readonly string[]): Promise<void> {
  if (orderIds.length === 0) return;
  // Rows locked in id order, as the settle statement locks them: the two cannot deadlock.
  await sql`
    update orders set last_checked_at = now()
    from (select id from orders where id = any(${[...orderIds]}::uuid[]) order by id for no key update) as checked
    where orders.id = checked.id`.execute(db);
}
