import type { Config } from '../config.js';
import type { Metrics } from '../ops/metrics.js';
import { publishAfterCommit, type OutboxDeps } from '../outbox/producer.js';
import { findPendingOrdersInWindow, recordOrdersChecked, type PendingOrder } from '../db/orders.js';
import { settlePayment, type PaymentOutcome, type TransitionDeps } from '../payments/transitions.js';
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
  config: Pick<Config, 'PAYMENTS_RECONCILE_CONCURRENCY'> & Partial<Pick<Config, 'OUTBOX_PUBLISH_DEADLINE_MS'>>;
  provider: PaymentProvider;
  metrics: Pick<Metrics, 'paymentsLateSuccess'>;
  statements: TransitionDeps['statements'];
}

export interface SweepHooks {
  /** Called once the orders are known (checked 0), a few times along the way (about every 5 %) and once at the end. */
  onProgress?(progress: SweepProgress): void | Promise<void>;
}

type Counter = 'paid' | 'failed' | 'expired' | 'unchanged' | 'errors';

const COUNTER_FOR_OUTCOME: Readonly<Record<PaymentOutcome, Counter>> = { succeeded: 'paid', failed: 'failed', expired: 'expired' };

/** Runs `fn` over `items` with at most `limit` calls in flight; `fn` must not throw. */
export async function forEachWithConcurrency<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const item = items[next++];
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
}

/**
 * Asks the provider about each pending order in the window, the least recently
 * checked first, and moves it to paid / failed / expired through `settlePayment`
 * — the webhook's exactly-once path, so a paid order queues one tracking email
 * whoever settles it first. One order's failure is counted and logged, never
 * thrown. Every order asked about gets its `last_checked_at` stamped (not in a
 * dry run), which sends it to the back of the next sweep's line.
 */
export async function runPaymentsSweep(options: SweepOptions, deps: SweepDeps, hooks: SweepHooks = {}): Promise<SweepSummary> {
  const started = performance.now();
  const dryRun = options.dryRun ?? false;
  const log = deps.log.child({ sweep: { windowHours: options.windowHours, limit: options.limit, dryRun } });
  const orders = await findPendingOrdersInWindow(deps.db, options);
  const counts: Record<Counter, number> = { paid: 0, failed: 0, expired: 0, unchanged: 0, errors: 0 };
  let checked = 0;
  const checkedIds: string[] = [];
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
      log.error(
        { orderId: order.id, providerStatus: lookup.status },
        'provider amount or currency differs from the order; order left unchanged',
      );
      return 'errors';
    }
    const outcome: PaymentOutcome = lookup.status;
    if (dryRun) return COUNTER_FOR_OUTCOME[outcome];
    const settlement = await settlePayment(
      { statements: deps.statements, log, lateSuccess: deps.metrics.paymentsLateSuccess },
      { providerRef: order.providerRef, outcome, amount: order.amount, currency: order.currency },
    );
    // Amounts were checked above; the statement checks again against the row it locked (and finds it, unless deleted).
    if (settlement.kind !== 'settled') {
      log.error({ orderId: order.id, result: settlement.kind }, 'sweep could not settle order; order left unchanged');
      return 'errors';
    }
    // Only after commit: the email job must never exist for a transition that rolled back.
    await publishAfterCommit(deps, settlement.outboxRows);
    // Settled meanwhile by a webhook (or another sweep): that caller queued the email.
    if (!settlement.transitioned) return 'unchanged';
    log.info({ orderId: order.id, outcome }, 'sweep settled order');
    return COUNTER_FOR_OUTCOME[outcome];
  };

  await report();
  await forEachWithConcurrency(orders, deps.config.PAYMENTS_RECONCILE_CONCURRENCY, async (order) => {
    let counter: Counter;
    if (!dryRun) checkedIds.push(order.id);
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
  try {
    await recordOrdersChecked(deps.db, checkedIds);
  } catch (err) {
    // Only fairness suffers: these orders keep their place in the line for the next sweep.
    log.warn({ err, orders: checkedIds.length }, 'sweep could not record when it checked its orders');
  }

  const summary: SweepSummary = { checked, ...counts, durationMs: Math.round(performance.now() - started) };
  // How far behind the sweep is: orders never checked before, and the least recently checked of the others.
  const previouslyChecked = orders.flatMap((order) => (order.lastCheckedAt ? [order.lastCheckedAt.getTime()] : []));
  const neverChecked = orders.length - previouslyChecked.length;
  const oldestLastCheckedAt = previouslyChecked.length > 0 ? new Date(Math.min(...previouslyChecked)).toISOString() : null;
  log.info({ summary, neverChecked, oldestLastCheckedAt }, 'payments sweep finished');
  return summary;
}
