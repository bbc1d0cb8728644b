// The end of a run, shared by the fault run and the soak: every order the database has paid is owed its tracking
// email too (also one whose webhook answer was lost), then a bounded wait for every promised email, then a settle
// for late repeats.
import { progress, round, sleep } from '../lib.js';
import { outstanding } from './analysis.js';
import type { Load } from './load.js';
import type { Stack } from './stack.js';

/** Adds a tracking expectation for every paid order of this run not yet expected (its webhook's answer was lost). */
export async function addPaidOrders(stack: Stack, load: Load): Promise<number> {
  const { rows } = await stack.withDb((client) =>
    client.query<{ id: string; email: string }>(`select id, email from orders where status = 'paid'`),
  );
  let added = 0;
  for (const row of rows) {
    if (load.expected.has(row.email)) continue;
    load.expected.set(row.email, { kind: 'tracking', answeredAt: undefined, orderId: row.id });
    added += 1;
  }
  return added;
}

export interface DrainResult {
  drained: boolean;
  waitedMs: number;
  outstandingAtStart: number;
  outstandingAtEnd: number;
  paidWithoutAnswer: number;
}

export async function drain(stack: Stack, load: Load, timeoutMs: number, settleMs: number): Promise<DrainResult> {
  const started = stack.clock();
  const outstandingAtStart = outstanding(load.expected, stack.smtp.received);
  progress(`draining: ${outstandingAtStart} promised emails not yet received (bounded at ${round(timeoutMs / 1000, 0)} s)`);
  let paidWithoutAnswer = 0;
  let lastLog = started;
  let left: number;
  for (;;) {
    paidWithoutAnswer += await addPaidOrders(stack, load).catch(() => 0);
    left = outstanding(load.expected, stack.smtp.received);
    const elapsed = stack.clock() - started;
    if (left === 0 || elapsed > timeoutMs) break;
    if (stack.clock() - lastLog > 10_000) {
      progress(`draining: ${left} outstanding after ${round(elapsed / 1000, 0)} s`);
      lastLog = stack.clock();
    }
    await sleep(1000);
  }
  const waitedMs = round(stack.clock() - started, 0);
  // Late repeats (a republished job, a stalled one picked up again) would come after the last first copy.
  await sleep(settleMs);
  paidWithoutAnswer += await addPaidOrders(stack, load).catch(() => 0);
  left = outstanding(load.expected, stack.smtp.received);
  progress(`drain ${left === 0 ? 'complete' : `gave up with ${left} outstanding`} after ${round(waitedMs / 1000, 1)} s`);
  return { drained: left === 0, waitedMs, outstandingAtStart, outstandingAtEnd: left, paidWithoutAnswer };
}
