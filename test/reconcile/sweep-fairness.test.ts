import t from 'tap';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';
import { WEBHOOK_SECRET } from '../support/payments.js';
import { insertOrders, startSimulator } from '../support/reconcile.js';
import { runPaymentsSweep } from '../../src/reconcile/sweep.js';

const { sim, url } = await startSimulator(t);
const smtp = await startSmtpServer(t);
const errand = await startTestErrand(
  t,
  testEnv(t, { SMTP_URL: smtp.url, PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET, PAYMENT_PROVIDER_URL: url, LOG_LEVEL: 'info' }),
);
const { deps } = errand;

const order = async (id: string) =>
  deps.db.selectFrom('orders').select(['status', 'last_checked_at']).where('id', '=', id).executeTakeFirstOrThrow();
const sweepLines = () => errand.logs.lines().filter((l) => l.msg === 'payments sweep finished');

t.test('limit 2: the two oldest orders stay pending at the provider; the third, settled, is paid by the second sweep', async (t) => {
  // Oldest first by creation: an abandoned checkout (provider: pending), a junk order (provider: 404), then a real one.
  const [abandoned, junk, real] = await insertOrders(deps.db, [
    { ageMinutes: 30 },
    { ageMinutes: 20 },
    { ageMinutes: 10, email: 'real@example.com' },
  ]);
  sim.setPayment(abandoned.providerRef, { status: 'pending', amount: abandoned.amount, currency: abandoned.currency });
  sim.setPayment(real.providerRef, { status: 'succeeded', amount: real.amount, currency: real.currency });

  const first = await runPaymentsSweep({ windowHours: 1, limit: 2 }, deps);
  t.match(first, { checked: 2, paid: 0, unchanged: 2 }, 'the first sweep takes the two never-checked oldest');
  t.same([...sim.requests.keys()].sort(), [abandoned.providerRef, junk.providerRef].sort());
  const stamped = await order(abandoned.id);
  t.ok(stamped.last_checked_at, 'last_checked_at recorded for a checked order');
  t.ok((await order(junk.id)).last_checked_at, 'also for the one the provider does not know');
  t.equal((await order(real.id)).last_checked_at, null, 'the unchecked one has none');
  t.match(sweepLines().at(-1), { neverChecked: 2, oldestLastCheckedAt: null }, 'the log line says both were never checked');

  const second = await runPaymentsSweep({ windowHours: 1, limit: 2 }, deps);
  t.match(second, { checked: 2, paid: 1, unchanged: 1 }, 'the never-checked order goes first, then the least recently checked');
  t.equal((await order(real.id)).status, 'paid', 'the real order is paid');
  t.equal(sim.requests.get(real.providerRef), 1);
  t.match(
    sweepLines().at(-1),
    { neverChecked: 1, oldestLastCheckedAt: stamped.last_checked_at!.toISOString() },
    'the log line shows the oldest last check',
  );
  await waitFor(() => smtp.received.some((e) => e.to[0] === 'real@example.com') || undefined, 15000, 'tracking email');

  // Both were stamped by one statement (a tie): the older one was taken second; now the junk order has waited longest.
  t.equal(sim.requests.get(abandoned.providerRef), 2, 'the second sweep took the older of the tied pair');
  const third = await runPaymentsSweep({ windowHours: 1, limit: 1 }, deps);
  t.equal(third.checked, 1);
  t.equal(sim.requests.get(junk.providerRef), 2, 'the third sweep asks about the least recently checked');
  t.equal(sim.requests.get(abandoned.providerRef), 2);
});

t.test('a dry run records no check', async (t) => {
  const [fresh] = await insertOrders(deps.db, [{ ageMinutes: 1 }]);
  sim.setPayment(fresh.providerRef, { status: 'pending', amount: fresh.amount, currency: fresh.currency });
  await runPaymentsSweep({ windowHours: 1, limit: 100, dryRun: true }, deps);
  t.equal((await order(fresh.id)).last_checked_at, null);
});
