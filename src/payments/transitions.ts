import { sql, type Transaction } from 'kysely';
import type { Database, OrderStatus } from '../core/db.js';
import { EMAIL_QUEUE, ORDER_TRACKING_LINK_JOB } from '../email/jobs.js';
import { enqueue, type OutboxRow } from '../outbox/producer.js';

export type PaymentOutcome = 'succeeded' | 'failed' | 'expired';

const STATUS_FOR_OUTCOME: Readonly<Record<PaymentOutcome, Exclude<OrderStatus, 'pending'>>> = {
  succeeded: 'paid',
  failed: 'failed',
  expired: 'expired',
};

export interface Settlement {
  /** True only for the one caller that moved the order out of pending. */
  transitioned: boolean;
  /** Jobs to hand to `publishAfterCommit` once the caller's transaction has committed. */
  outboxRows: OutboxRow[];
}

/**
 * The one exactly-once path from pending to paid | failed | expired, shared by
 * the webhook and the reconciliation sweep. The update is conditional on
 * `status = 'pending'`: concurrent callers queue on the row lock and all but the
 * first then match no row, so only that one queues the tracking email, in the
 * same transaction. Every other status is final.
 */
export async function settleOrder(
  trx: Transaction<Database>,
  input: { orderId: string; outcome: PaymentOutcome },
): Promise<Settlement> {
  const status = STATUS_FOR_OUTCOME[input.outcome];
  const updated = await trx
    .updateTable('orders')
    .set({ status, paid_at: status === 'paid' ? sql<Date>`now()` : null, updated_at: sql<Date>`now()` })
    .where('id', '=', input.orderId)
    .where('status', '=', 'pending')
    .returning('id')
    .executeTakeFirst();
  if (!updated) return { transitioned: false, outboxRows: [] };
  if (status !== 'paid') return { transitioned: true, outboxRows: [] };
  const row = await enqueue(trx, EMAIL_QUEUE, ORDER_TRACKING_LINK_JOB, { orderId: input.orderId });
  return { transitioned: true, outboxRows: [row] };
}
