import { sql } from 'kysely';
import { activeTraceContext } from '../core/tracing.js';
import { createStatementBatcher } from './batch.js';
import { outboxInsertSql, type OutboxJob, type OutboxRow } from './outbox.js';
import type { DataLayer } from './pool.js';
import type { OrderStatus } from './schema.js';

/** One report to apply, with the state rules of its outcome (the payments capability's SETTLEABLE_FROM). */
export interface SettleInput {
  providerRef: string;
  /** The status the order moves to. */
  target: Exclude<OrderStatus, 'pending'>;
  /** The statuses it may move from. */
  settleableFrom: readonly OrderStatus[];
  amount: number;
  currency: string;
  /** A webhook event: recorded by id in the same statement, so a replay changes nothing. */
  event?: { id: string; type: string };
}

export interface SettleOutput {
  /** Null: no order has this providerRef. */
  orderId: string | null;
  /** The order's status when this call got its row lock. */
  statusBefore: OrderStatus | null;
  /** The order's amount and currency (for a mismatch). */
  amount: number | null;
  currency: string | null;
  /** False: amount or currency differ from the order's; nothing changed. */
  accepted: boolean;
  /** The event id was recorded by this call (false for a replay, or when there is no event). */
  recorded: boolean;
  /** Non-null only for the one caller that moved the order: its status before. */
  previousStatus: OrderStatus | null;
  /** The tracking email's outbox row, when this call made the order paid. */
  outboxRow: OutboxRow | null;
}

export type SettlePayment = (input: SettleInput) => Promise<SettleOutput>;

interface SettleRow {
  i: string;
  order_id: string | null;
  status_before: OrderStatus | null;
  amount: string | null;
  currency: string | null;
  accepted: boolean;
  recorded: boolean;
  previous_status: OrderStatus | null;
  outbox_id: string | null;
  outbox_queue: string | null;
  outbox_job_name: string | null;
  outbox_payload: unknown;
}

/** Most reports one statement takes; under load a statement holds the few that came in one event-loop turn. */
const SETTLE_BATCH_MAX = 200;

/**
 * The one exactly-once path, shared by the webhook and the reconciliation sweep: ONE statement (one round trip, no
 * explicit transaction) that, for each report it holds,
 * - locks the order row (`FOR NO KEY UPDATE`: concurrent callers for one order queue here, and each then reads the
 *   status its predecessor committed);
 * - refuses everything when the order exists and amount or currency differ;
 * - records the event id, if any (a replay, or a concurrent copy, conflicts and stops there);
 * - moves the order under the state rules it is given;
 * - inserts the tracking email's outbox row for the one caller that made it paid, and stamps the order's
 *   tracking_email_queued_at (so no retention of outbox rows can make the backfill queue a second one).
 * A statement is atomic: all of it commits, or none.
 *
 * LOCK ORDER: order rows by id, then payment_events by event id, each sorted; recordOrdersChecked (orders.ts) locks
 * orders by id too. So two statements (two batches, two processes, a webhook and a sweep) cannot deadlock
 * (test/db/settle-payment.test.ts races the sweep's stamp against settles). Within one statement no two reports share an order or an event id
 * (the batcher's keys): they run in arrival order, each seeing its predecessor's commit.
 */
export function settlePaymentsStatement(
  data: DataLayer,
  trackingJob: OutboxJob<{ orderId: string }>,
): (items: readonly (SettleInput & { traceContext: string | null })[]) => Promise<SettleOutput[]> {
  const run = data.prepared.compile(
    ['refs', 'targets', 'settleableFroms', 'amounts', 'currencies', 'eventIds', 'eventTypes', 'traceContexts'],
    (batch: {
      refs: string[];
      targets: OrderStatus[];
      /** settleableFrom of each report, comma-separated (PostgreSQL arrays of arrays must be rectangular). */
      settleableFroms: string[];
      amounts: number[];
      currencies: string[];
      eventIds: (string | null)[];
      eventTypes: (string | null)[];
      traceContexts: (string | null)[];
    }) =>
      sql<SettleRow>`
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
            ${outboxInsertSql(trackingJob, {
              payload: { orderId: sql`moved.id::text` },
              traceContext: sql`moved.trace_context`,
              from: sql`moved where moved.target = 'paid'`,
            })}
          )
          select judged.i, judged.order_id, judged.status as status_before, judged.order_amount as amount,
            judged.order_currency as currency, judged.accepted,
            judged.event_id in (select event_id from recorded) as recorded,
            moved.previous_status, queued.id as outbox_id, queued.queue as outbox_queue, queued.job_name as outbox_job_name,
            queued.payload as outbox_payload
          from judged
            left join moved on moved.i = judged.i
            left join queued on queued.payload->>'orderId' = judged.order_id::text`,
  );
  return async (items) => {
    const rows = await run({
      refs: items.map((item) => item.providerRef),
      targets: items.map((item) => item.target),
      settleableFroms: items.map((item) => item.settleableFrom.join(',')),
      amounts: items.map((item) => item.amount),
      currencies: items.map((item) => item.currency),
      eventIds: items.map((item) => item.event?.id ?? null),
      eventTypes: items.map((item) => item.event?.type ?? null),
      traceContexts: items.map((item) => item.traceContext),
    });
    // with ordinality counts from 1.
    const byIndex = new Map(rows.map((row) => [Number(row.i), row]));
    return items.map((_, index) => {
      const row = byIndex.get(index + 1)!;
      return {
        orderId: row.order_id,
        statusBefore: row.status_before,
        amount: row.amount === null ? null : Number(row.amount),
        currency: row.currency,
        accepted: row.accepted,
        recorded: row.recorded,
        previousStatus: row.previous_status,
        outboxRow:
          row.outbox_id === null
            ? null
            : { id: row.outbox_id, queue: row.outbox_queue!, job_name: row.outbox_job_name!, payload: row.outbox_payload },
      };
    });
  };
}

/**
 * settlePayment for concurrent callers: the reports of one event-loop turn share one statement
 * (settlePaymentsStatement), prepared once per connection. With DB_BATCHING=off each report is a statement of its own.
 */
export function prepareSettlePayment(data: DataLayer, trackingJob: OutboxJob<{ orderId: string }>): SettlePayment {
  const settle = createStatementBatcher<SettleInput & { traceContext: string | null }, SettleOutput>(data, {
    maxBatch: SETTLE_BATCH_MAX,
    keysOf: (item) => (item.event ? [`order:${item.providerRef}`, `event:${item.event.id}`] : [`order:${item.providerRef}`]),
    run: settlePaymentsStatement(data, trackingJob),
  });
  return (input) => {
    const traceContext = activeTraceContext();
    return settle({ ...input, traceContext: traceContext === null ? null : JSON.stringify(traceContext) });
  };
}
