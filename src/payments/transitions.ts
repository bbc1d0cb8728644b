import { sql } from 'kysely';
import { executePrepared, type Db, type OrderStatus } from '../core/db.js';
import type { Logger } from '../core/logger.js';
import { EMAIL_QUEUE, ORDER_TRACKING_LINK_JOB } from '../email/jobs.js';
import type { OutboxRow } from '../outbox/producer.js';
import { activeTraceContext } from '../core/tracing.js';

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
  db: Db;
  log: Logger;
  /** errand_payments_late_success_total */
  lateSuccess: { inc(): void };
}

interface SettleRow {
  order_id: string | null;
  status_before: OrderStatus | null;
  amount: string | null;
  currency: string | null;
  accepted: boolean;
  recorded: boolean;
  previous_status: OrderStatus | null;
  outbox_id: string | null;
  outbox_payload: unknown;
}

/**
 * The one exactly-once path, shared by the webhook and the reconciliation sweep:
 * ONE statement (so one round trip and no explicit transaction) that
 * - locks the order row (`FOR NO KEY UPDATE`: concurrent callers for one order
 *   queue here, and each then reads the status its predecessor committed);
 * - refuses everything when the order exists and amount or currency differ;
 * - records the event id, if any (a replay, or a concurrent copy, conflicts and stops there);
 * - moves the order under the state rules;
 * - inserts the tracking email's outbox row for the one caller that made it paid.
 * A statement is atomic: all of it commits, or none.
 */
async function runSettleStatement(db: Db, report: PaymentReport): Promise<SettleRow> {
  const target = STATUS_FOR_OUTCOME[report.outcome];
  const from = SETTLEABLE_FROM[report.outcome];
  const eventId = report.event?.id ?? null;
  const eventType = report.event?.type ?? null;
  const traceContext = activeTraceContext();
  const statement = sql<SettleRow>`
    with ord as (
      select id, status, amount, currency from orders where provider_ref = ${report.providerRef} for no key update
    ), accepted as (
      select not exists (select 1 from ord where amount <> ${report.amount}::bigint or currency <> ${report.currency}::text) as ok
    ), recorded as (
      insert into payment_events (event_id, type, provider_ref, order_id, transitioned)
      select ${eventId}::text, ${eventType}::text, ${report.providerRef}::text, ord.id, coalesce(ord.status = any(${from}::text[]), false)
      from accepted left join ord on true
      where accepted.ok and ${eventId}::text is not null
      on conflict (event_id) do nothing
      returning event_id
    ), moved as (
      update orders
      set status = ${target}, paid_at = ${target === 'paid' ? sql`now()` : null}, updated_at = now()
      from ord, accepted
      where orders.id = ord.id and accepted.ok and orders.status = any(${from}::text[])
        and (${eventId}::text is null or exists (select 1 from recorded))
      returning orders.id, ord.status as previous_status
    ), queued as (
      insert into outbox (queue, job_name, payload, trace_context)
      select ${EMAIL_QUEUE}::text, ${ORDER_TRACKING_LINK_JOB}::text, jsonb_build_object('orderId', moved.id),
        ${traceContext === null ? null : JSON.stringify(traceContext)}::jsonb
      from moved where ${target === 'paid'}::boolean
      returning id, payload
    )
    select ord.id as order_id, ord.status as status_before, ord.amount, ord.currency, accepted.ok as accepted,
      exists (select 1 from recorded) as recorded, moved.previous_status, queued.id as outbox_id, queued.payload as outbox_payload
    from accepted left join ord on true left join moved on true left join queued on true
  `.compile(db);
  // Two texts (paid or not): each connection prepares them once.
  return (await executePrepared(db, statement))[0];
}

/**
 * Applies what the provider reported, exactly once whatever mix of webhooks
 * (repeated, concurrent) and sweeps reports it. Logs a late success (and counts
 * it) and an outcome that arrives after the order was paid.
 */
export async function settlePayment(deps: TransitionDeps, report: PaymentReport): Promise<SettleResult> {
  const row = await runSettleStatement(deps.db, report);
  if (row.order_id !== null && !row.accepted) {
    return { kind: 'mismatch', orderId: row.order_id, expected: { amount: Number(row.amount), currency: row.currency! } };
  }
  if (report.event && !row.recorded) return { kind: 'duplicate' };
  if (row.order_id === null) return { kind: 'unknown-order' };

  const statusBefore = row.status_before!;
  const transitioned = row.previous_status !== null;
  const lateSuccess = transitioned && row.previous_status !== 'pending';
  const fields = { orderId: row.order_id, eventId: report.event?.id, outcome: report.outcome };
  if (lateSuccess) {
    deps.lateSuccess.inc();
    deps.log.warn(
      { ...fields, previousStatus: row.previous_status },
      'late payment success: order marked paid after it was failed or expired',
    );
  } else if (statusBefore === 'paid' && report.outcome !== 'succeeded') {
    deps.log.warn(fields, 'payment outcome after the order was paid; paid is final, order unchanged');
  }
  const outboxRows: OutboxRow[] =
    row.outbox_id === null
      ? []
      : [{ id: row.outbox_id, queue: EMAIL_QUEUE, job_name: ORDER_TRACKING_LINK_JOB, payload: row.outbox_payload }];
  return { kind: 'settled', orderId: row.order_id, statusBefore, transitioned, lateSuccess, outboxRows };
}
