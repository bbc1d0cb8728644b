import { sql } from 'kysely';
import type { Config } from '../config.js';
import { publishAfterCommit, type OutboxDeps } from '../outbox/producer.js';
import { settleOrder, type PaymentOutcome } from '../payments/transitions.js';
import type { PaymentProvider } from './provider.js';

export interface SweepOptions {
  /** May be fractional (a one-off sweep of the last 30 minutes). */
  windowHours: number;
  limit: number;
  /** Asks the provider and counts what would happen, but changes nothing. */
  dryRun?: boolean;
}

export interface SweepSummary {
  checked: number;
  paid: number;
  failed: number;
  expired: number;
  unchanged: number;
  errors: number;
  durationMs: number;
}

export interface SweepProgress extends Omit<SweepSummary, 'durationMs'> {
  total: number;
}

export interface SweepDeps extends OutboxDeps {
  config: Pick<Config, 'PAYMENTS_RECONCILE_CONCURRENCY'>;
  provider: PaymentProvider;
}

export interface SweepHooks {
  /** Called a few times along the way (about every 5 %) and once at the end. */
  onProgress?(progress: SweepProgress): void | Promise<void>;
}

interface PendingOrder {
  id: string;
  amount: number;
  currency: string;
  providerRef: string;
}

type Counter = 'paid' | 'failed' | 'expired' | 'unchanged' | 'errors';

const COUNTER_FOR_OUTCOME: Readonly<Record<PaymentOutcome, Counter>> = { succeeded: 'paid', failed: 'failed', expired: 'expired' };

/** Runs `fn` over `items` with at most `limit` calls in flight; `fn` must not throw. */
export async function forEachWithConcurrency<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
}

/** Pending orders created within the window, oldest first (the partial index `orders_pending_by_created_at`). */
export async function findPendingOrdersInWindow(db: OutboxDeps['db'], options: { windowHours: number; limit: number }): Promise<PendingOrder[]> {
  const rows = await db
    .selectFrom('orders')
    .select(['id', 'amount', 'currency', 'provider_ref'])
    .where('status', '=', 'pending')
    .where('created_at', '>=', sql<Date>`now() - make_interval(secs => ${options.windowHours * 3600})`)
    .orderBy('created_at')
    .orderBy('id')
    .limit(options.limit)
    .execute();
  return rows.map((row) => ({ id: row.id, amount: Number(row.amount), currency: row.currency, providerRef: row.provider_ref }));
}

/**
 * Asks the provider about each pending order in the window and moves it to
 * paid / failed / expired through `settleOrder` — the webhook's exactly-once
 * path, so a paid order queues one tracking email whoever settles it first.
 * One order's failure is counted and logged, never thrown.
 */
export async function runPaymentsSweep(options: SweepOptions, deps: SweepDeps, hooks: SweepHooks = {}): Promise<SweepSummary> {
  const started = performance.now();
  const dryRun = options.dryRun ?? false;
  const log = deps.log.child({ sweep: { windowHours: options.windowHours, limit: options.limit, dryRun } });
  const orders = await findPendingOrdersInWindow(deps.db, options);
  const counts: Record<Counter, number> = { paid: 0, failed: 0, expired: 0, unchanged: 0, errors: 0 };
  let checked = 0;
  const progressEvery = Math.max(1, Math.ceil(orders.length / 20));

  const report = async () => {
    if (!hooks.onProgress) return;
    try {
      await hooks.onProgress({ total: orders.length, checked, ...counts });
    } catch (err) {
      log.warn({ err }, 'sweep progress could not be reported');
    }
  };

  const checkOne = async (order: PendingOrder): Promise<Counter> => {
    const lookup = await deps.provider.getPayment(order.providerRef);
    switch (lookup.kind) {
      case 'unknown':
        return 'unchanged';
      case 'transient':
      case 'invalid':
        log.warn({ orderId: order.id, kind: lookup.kind, reason: lookup.reason }, 'payment provider lookup failed; order left pending');
        return 'errors';
      case 'found':
        break;
    }
    if (lookup.status === 'pending') return 'unchanged';
    if (lookup.amount !== order.amount || lookup.currency !== order.currency) {
      // Order id only: amounts and references stay out of the error line, as in the webhook's 422.
      log.error({ orderId: order.id, providerStatus: lookup.status }, 'provider amount or currency differs from the order; order left unchanged');
      return 'errors';
    }
    const outcome: PaymentOutcome = lookup.status;
    if (dryRun) return COUNTER_FOR_OUTCOME[outcome];
    const settlement = await deps.db.transaction().execute((trx) => settleOrder(trx, { orderId: order.id, outcome }));
    // Only after commit: the email job must never exist for a transition that rolled back.
    await publishAfterCommit(deps, settlement.outboxRows);
    // Settled meanwhile by a webhook (or another sweep): that caller queued the email.
    if (!settlement.transitioned) return 'unchanged';
    log.info({ orderId: order.id, outcome }, 'sweep settled order');
    return COUNTER_FOR_OUTCOME[outcome];
  };

  await forEachWithConcurrency(orders, deps.config.PAYMENTS_RECONCILE_CONCURRENCY, async (order) => {
    let counter: Counter;
    try {
      counter = await checkOne(order);
    } catch (err) {
      log.error({ orderId: order.id, err }, 'sweep could not reconcile order');
      counter = 'errors';
    }
    counts[counter] += 1;
    checked += 1;
    if (checked % progressEvery === 0 && checked < orders.length) await report();
  });
  await report();

  const summary: SweepSummary = { checked, ...counts, durationMs: Math.round(performance.now() - started) };
  log.info({ summary }, 'payments sweep finished');
  return summary;
}
