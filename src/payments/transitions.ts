import { sql } from 'kysely';
import { compileOnce, createStatementBatcher, type Db, type OrderStatus } from '../core/db.js';
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

interface SettleItem {
  report: PaymentReport;
  traceContext: string | null;
}

/** Most reports one statement takes; under load a statement holds the few that came in one event-loop turn. */
const SETTLE_BATCH_MAX = 200;

/**
 * The one exactly-once path, shared by the webhook and the reconciliation sweep:
 * ONE statement (so one round trip and no explicit transaction) that, for each report it holds,
 * - locks the order row (`FOR NO KEY UPDATE`: concurrent callers for one order
 *   queue here, and each then reads the status its predecessor committed);
 * - refuses everything when the order exists and amount or currency differ;
 * - records the event id, if any (a replay, or a concurrent copy, conflicts and stops there);
 * - moves the order under the state rules;
 * - inserts the tracking email's outbox row for the one caller that made it paid, and stamps the order's
 *   tracking_email_queued_at (so no retention of outbox rows can make the backfill queue a second one).
 * A statement is atomic: all of it commits, or none.
 *
 * Concurrent callers share statements (createStatementBatcher), with no two reports of one order or one event id in
 * the same or overlapping statements (they run in arrival order, each seeing its predecessor's commit), and
 * order rows and event ids locked in sorted order, so two statements cannot deadlock.
 */
function prepareSettleStatement(db: Db): (item: SettleItem) => Promise<SettleRow> {
  const run = compileOnce(
    db,
    ['refs', 'targets', 'settleableFroms', 'amounts', 'currencies', 'eventIds', 'eventTypes', 'traceContexts'],
    (
      db,
      batch: {
        refs: string[];
        targets: OrderStatus[];
        /** SETTLEABLE_FROM of each report's outcome, comma-separated (PostgreSQL arrays of arrays must be rectangular). */
        settleableFroms: string[];
        amounts: number[];
        currencies: string[];
        eventIds: (string | null)[];
        eventTypes: (string | null)[];
        traceContexts: (string | null)[];
      },
    ) => ({
      compile: () =>
        sql<SettleRow & { i: string }>`
          with input as (
            select * from unnest(${batch.refs}::text[], ${batch.targets}::text[], ${batch.settleableFroms}::text[], ${batch.amounts}::bigint[],
                                 ${batch.currencies}::text[], ${batch.eventIds}::text[], ${batch.eventTypes}::text[],
                                 ${batch.traceContexts}::jsonb[])
              with ordinality as input(provider_ref, target, settleable_from, amount, currency, event_id, event_type, trace_context, i)
          ), ord as materialized (
            select input.i, orders.id, orders.status, orders.amount, orders.currency
            from input join orders on orders.provider_ref = input.provider_ref
            order by orders.id
            for no key update of orders
          ), judged as materialized (
            select input.*, ord.id as order_id, ord.status, ord.amount as order_amount, ord.currency as order_currency,
              (ord.id is null or (ord.amount = input.amount and ord.currency = input.currency)) as accepted,
              coalesce(ord.status = any(string_to_array(input.settleable_from, ',')), false) as settleable
            from input left join ord on ord.i = input.i
          ), recorded as (
            insert into payment_events (event_id, type, provider_ref, order_id, transitioned)
            select event_id, event_type, provider_ref, order_id, settleable
            from judged where accepted and event_id is not null
            order by event_id
            on conflict (event_id) do nothing
            returning event_id
          ), moved as (
            update orders
            set status = judged.target, paid_at = case when judged.target = 'paid' then now() end, updated_at = now(),
              -- The outbox row below is written for exactly these orders: the order remembers it past retention.
              tracking_email_queued_at = case when judged.target = 'paid' then now() else orders.tracking_email_queued_at end
            from judged
            where orders.id = judged.order_id and judged.accepted and judged.settleable
              and (judged.event_id is null or judged.event_id in (select event_id from recorded))
            returning orders.id, judged.i, judged.status as previous_status, judged.target, judged.trace_context
          ), queued as (
            insert into outbox (queue, job_name, payload, trace_context)
            select ${EMAIL_QUEUE}::text, ${ORDER_TRACKING_LINK_JOB}::text, jsonb_build_object('orderId', moved.id), moved.trace_context
            from moved where moved.target = 'paid'
            returning id, payload
          )
          select judged.i, judged.order_id, judged.status as status_before, judged.order_amount as amount,
            judged.order_currency as currency, judged.accepted,
            judged.event_id in (select event_id from recorded) as recorded,
            moved.previous_status, queued.id as outbox_id, queued.payload as outbox_payload
          from judged
            left join moved on moved.i = judged.i
            left join queued on queued.payload->>'orderId' = judged.order_id::text`.compile(db),
    }),
  );
  return createStatementBatcher<SettleItem, SettleRow>({
    maxBatch: SETTLE_BATCH_MAX,
    keysOf: ({ report }) => (report.event ? [`order:${report.providerRef}`, `event:${report.event.id}`] : [`order:${report.providerRef}`]),
    async run(items) {
      const rows = await run({
        refs: items.map(({ report }) => report.providerRef),
        targets: items.map(({ report }) => STATUS_FOR_OUTCOME[report.outcome]),
        settleableFroms: items.map(({ report }) => SETTLEABLE_FROM[report.outcome].join(',')),
        amounts: items.map(({ report }) => report.amount),
        currencies: items.map(({ report }) => report.currency),
        eventIds: items.map(({ report }) => report.event?.id ?? null),
        eventTypes: items.map(({ report }) => report.event?.type ?? null),
        traceContexts: items.map(({ traceContext }) => traceContext),
      });
      const byIndex = new Map(rows.map(({ i, ...row }) => [Number(i), row]));
      // with ordinality counts from 1.
      return items.map((_, index) => byIndex.get(index + 1)!);
    },
  });
}

// One batcher per database (a pool): every caller of settlePayment on it shares the statements.
const settleStatements = new WeakMap<Db, (item: SettleItem) => Promise<SettleRow>>();

function runSettleStatement(db: Db, report: PaymentReport): Promise<SettleRow> {
  let settle = settleStatements.get(db);
  if (settle === undefined) {
    settle = prepareSettleStatement(db);
    settleStatements.set(db, settle);
  }
  const traceContext = activeTraceContext();
  return settle({ report, traceContext: traceContext === null ? null : JSON.stringify(traceContext) });
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
