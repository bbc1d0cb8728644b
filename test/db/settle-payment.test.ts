import t from 'tap';
import { sql } from 'kysely';
import { settlePayment, type PaymentReport } from '../../src/payments/transitions.js';
import { insertOrder, recordOrdersChecked } from '../../src/db/orders.js';
import { startTestErrand, testEnv } from '../support/helpers.js';

// ROLE=api: no worker or relay touches the outbox while the statement is examined. The reports below are
// submitted in one event-loop turn, so they share statements (createBatcher in transitions.ts).
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
const { db } = errand.deps;
let lateSuccesses = 0;
const deps = { statements: errand.deps.statements, log: errand.deps.log, lateSuccess: { inc: () => (lateSuccesses += 1) } };
let n = 0;
const order = (email: string) =>
  insertOrder(db, { email, amount: 1500, currency: 'EUR', providerRef: `pay_settle_${(n += 1)}_${Date.now()}` });
const report = (
  o: { providerRef: string },
  type: 'succeeded' | 'failed' | 'expired',
  eventId: string | null,
  amount = 1500,
): PaymentReport => ({
  providerRef: o.providerRef,
  outcome: type,
  amount,
  currency: 'EUR',
  ...(eventId === null ? {} : { event: { id: eventId, type: `payment.${type}` } }),
});

t.test('one burst of mixed reports: each caller gets the answer it would have got alone', async (t) => {
  const [paid, mismatched, failedThenPaid, dupe, swept] = await Promise.all(
    ['a@x.example', 'b@x.example', 'c@x.example', 'd@x.example', 'e@x.example'].map(order),
  );
  const results = await Promise.all([
    settlePayment(deps, report(paid, 'succeeded', 'evt_burst_1')),
    settlePayment(deps, report(mismatched, 'succeeded', 'evt_burst_2', 999)),
    settlePayment(deps, report({ providerRef: 'pay_nobody' }, 'succeeded', 'evt_burst_3')),
    settlePayment(deps, report(failedThenPaid, 'failed', 'evt_burst_4')),
    settlePayment(deps, report(failedThenPaid, 'succeeded', 'evt_burst_5')), // same order: after the failure
    settlePayment(deps, report(dupe, 'expired', 'evt_burst_6')),
    settlePayment(deps, report(dupe, 'expired', 'evt_burst_6')), // the same event again
    settlePayment(deps, report(swept, 'succeeded', null)), // the sweep: no event id
  ]);
  t.match(results[0], { kind: 'settled', orderId: paid.id, statusBefore: 'pending', transitioned: true, lateSuccess: false });
  t.equal(results[0].kind === 'settled' && results[0].outboxRows.length, 1, 'the paid order gets its tracking email row');
  t.same(results[1], { kind: 'mismatch', orderId: mismatched.id, expected: { amount: 1500, currency: 'EUR' } });
  t.same(results[2], { kind: 'unknown-order' });
  t.match(results[3], { kind: 'settled', statusBefore: 'pending', transitioned: true, outboxRows: [] });
  t.match(
    results[4],
    { kind: 'settled', statusBefore: 'failed', transitioned: true, lateSuccess: true },
    'ran after the failure, in arrival order',
  );
  t.match(results[5], { kind: 'settled', transitioned: true });
  t.same(results[6], { kind: 'duplicate' }, 'the second copy of one event is a duplicate');
  t.match(results[7], { kind: 'settled', orderId: swept.id, transitioned: true });
  t.equal(lateSuccesses, 1);

  const statuses = await db
    .selectFrom('orders')
    .select(['id', 'status'])
    .where(
      'id',
      'in',
      [paid, mismatched, failedThenPaid, dupe, swept].map((o) => o.id),
    )
    .execute();
  const statusOf = new Map(statuses.map((s) => [s.id, s.status]));
  t.same(
    [paid, mismatched, failedThenPaid, dupe, swept].map((o) => statusOf.get(o.id)),
    ['paid', 'pending', 'paid', 'expired', 'paid'],
  );
  const outboxOrders = results.flatMap((r) =>
    r.kind === 'settled' ? r.outboxRows.map((row) => (row.payload as { orderId: string }).orderId) : [],
  );
  t.same(outboxOrders.sort(), [paid.id, failedThenPaid.id, swept.id].sort(), "each outbox row is its own caller's order");
  const events = await db
    .selectFrom('payment_events')
    .select('event_id')
    .where('event_id', 'like', 'evt_burst_%')
    .orderBy('event_id')
    .execute();
  t.same(
    events.map((e) => e.event_id),
    ['evt_burst_1', 'evt_burst_3', 'evt_burst_4', 'evt_burst_5', 'evt_burst_6'],
    'events recorded once; the refused mismatch is not recorded',
  );
});

t.test("settle statements racing the sweep's last-checked stamp never deadlock (both lock orders in id order)", async (t) => {
  const orders = await Promise.all(Array.from({ length: 200 }, (_, i) => order(`race-${i}@x.example`)));
  const deadlocks = async () =>
    Number(
      (await sql<{ n: string }>`select deadlocks::text as n from pg_stat_database where datname = current_database()`.execute(db)).rows[0]
        .n,
    );
  const before = await deadlocks();
  const errors: string[] = [];
  for (let round = 0; round < 100; round++) {
    // After the first round these change nothing, but each still locks every order row it names.
    const settles = orders.map((o) =>
      settlePayment(deps, report(o, 'expired', null)).catch((error: Error) => void errors.push(`settle: ${error.message}`)),
    );
    const stamp = new Promise((resolve) => setTimeout(resolve, Math.random() * 4))
      .then(() => recordOrdersChecked(db, orders.map((o) => o.id).reverse()))
      .catch((error: Error) => void errors.push(`stamp: ${error.message}`));
    await Promise.all([...settles, stamp]);
  }
  t.same(errors, [], 'no statement failed');
  // Statistics reach the shared counters within about a second of each backend's transaction.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  t.equal((await deadlocks()) - before, 0, 'PostgreSQL detected no deadlock (a settle retried alone would hide one from the callers)');
});
