import type { Logger } from '../core/logger.js';
import type { OutboxRow } from '../db/outbox.js';
import type { OrderStatus } from '../db/schema.js';
import type { SettlePayment } from '../db/settle-payment.js';

export type PaymentOutcome = 'succeeded' | 'failed' | 'expired';

const STATUS_FOR_OUTCOME: Readonly<Record<PaymentOutcome, Exclude<OrderStatus, 'pending'>>> = {
  succeeded: 'paid',
  failed: 'failed',
  expired: 'expired',
};

/**
 * The state rules: pending → paid | failed | expired, and failed | expired → paid
 * (money that moved wins: a declined first attempt followed by a successful retry
 * is normal). paid is final.
 */
export const SETTLEABLE_FROM: Readonly<Record<PaymentOutcome, readonly OrderStatus[]>> = {
  succeeded: ['pending', 'failed', 'expired'],
  failed: ['pending'],
  expired: ['pending'],
};

/** What the provider says about one payment (a webhook event, or the sweep's lookup). */
export interface PaymentReport {
  providerRef: string;
  outcome: PaymentOutcome;
  amount: number;
  currency: string;
  /** A webhook event: recorded by id in the same statement, so a replay changes nothing. */
  event?: { id: string; type: string };
}

export type SettleResult =
  | { kind: 'mismatch'; orderId: string; expected: { amount: number; currency: string } }
  | { kind: 'duplicate' }
  | { kind: 'unknown-order' }
  | {
      kind: 'settled';
      orderId: string;
      /** The order's status when this call got its row lock. */
      statusBefore: OrderStatus;
      /** True only for the one caller that moved the order. */
      transitioned: boolean;
      /** failed | expired → paid. */
      lateSuccess: boolean;
      /** Jobs to hand to `publishAfterCommit` (the statement has committed when this returns). */
      outboxRows: OutboxRow[];
    };

export interface TransitionDeps {
  /** The settle statement (src/db/settle-payment.ts), built once by createDeps. */
  statements: { settlePayment: SettlePayment };
  log: Logger;
  /** errand_payments_late_success_total */
  lateSuccess: { inc(): void };
}

/**
 * Applies what the provider reported, exactly once whatever mix of webhooks
 * (repeated, concurrent) and sweeps reports it. Logs a late success (and counts
 * it) and an outcome that arrives after the order was paid.
 */
export async function settlePayment(deps: TransitionDeps, report: PaymentReport): Promise<SettleResult> {
  const row = await deps.statements.settlePayment({
    providerRef: report.providerRef,
    target: STATUS_FOR_OUTCOME[report.outcome],
    settleableFrom: SETTLEABLE_FROM[report.outcome],
    amount: report.amount,
    currency: report.currency,
    ...(report.event ? { event: report.event } : {}),
  });
  if (row.orderId !== null && !row.accepted) {
    return { kind: 'mismatch', orderId: row.orderId, expected: { amount: row.amount!, currency: row.currency! } };
  }
  if (report.event && !row.recorded) return { kind: 'duplicate' };
  if (row.orderId === null) return { kind: 'unknown-order' };

  const statusBefore = row.statusBefore!;
  const transitioned = row.previousStatus !== null;
  const lateSuccess = transitioned && row.previousStatus !== 'pending';
  const fields = { orderId: row.orderId, eventId: report.event?.id, outcome: report.outcome };
  if (lateSuccess) {
    deps.lateSuccess.inc();
    deps.log.warn(
      { ...fields, previousStatus: row.previousStatus },
      'late payment success: order marked paid after it was failed or expired',
    );
  } else if (statusBefore === 'paid' && report.outcome !== 'succeeded') {
    deps.log.warn(fields, 'payment outcome after the order was paid; paid is final, order unchanged');
  }
  const outboxRows: OutboxRow[] = row.outboxRow === null ? [] : [row.outboxRow];
  return { kind: 'settled', orderId: row.orderId, statusBefore, transitioned, lateSuccess, outboxRows };
}
