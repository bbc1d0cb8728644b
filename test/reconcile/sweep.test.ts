import t from 'tap';
import { QueueEvents } from 'bullmq';
import { sql } from 'kysely';
import { startSmtpServer, startTestErrand, testEnv, waitFor, waitForOutboxDrained } from '../support/helpers.js';
import { paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';
import { insertOrders, startSimulator, type TestOrder } from '../support/reconcile.js';
import { PAYMENTS_RECONCILE_QUEUE } from '../../src/queues.js';
import { enqueuePaymentsSweep } from '../../src/reconcile/jobs.js';
import { runPaymentsSweep, type SweepProgress, type SweepSummary } from '../../src/reconcile/sweep.js';
import type { ProviderPaymentStatus } from '../../src/reconcile/provider.js';

const { sim, url } = await startSimulator(t);
const smtp = await startSmtpServer(t);
const errand = await startTestErrand(
  t,
  testEnv(t, {
    SMTP_URL: smtp.url,
    PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET,
    PAYMENT_PROVIDER_URL: url,
    // Generous: the machine is shared; only the two 'timeout' references wait this long.
    PAYMENT_PROVIDER_TIMEOUT_MS: '2500',
    PAYMENTS_RECONCILE_CONCURRENCY: '4',
    EMAIL_CONCURRENCY: '4',
    EMAIL_RATE_MAX: '100',
    EMAIL_RATE_DURATION_MS: '10',
    LOG_LEVEL: 'info',
  }),
);
const { app, deps } = errand;

const statusOf = async (orderId: string) =>
  (await deps.db.selectFrom('orders').select('status').where('id', '=', orderId).executeTakeFirstOrThrow()).status;
const statusesOf = async (orders: TestOrder[]) => {
  const rows = await deps.db
    .selectFrom('orders')
    .select(['id', 'status'])
    .where(
      'id',
      'in',
      orders.map((o) => o.id),
    )
    .execute();
  const byId = new Map(rows.map((r) => [r.id, r.status]));
  return orders.map((o) => byId.get(o.id));
};
const trackingJobCount = async () =>
  Number(
    (
      await deps.db
        .selectFrom('outbox')
        .select(sql<string>`count(*)`.as('n'))
        .where('job_name', '=', 'order-tracking-link')
        .executeTakeFirstOrThrow()
    ).n,
  );
const emailsTo = (address: string) => smtp.received.filter((e) => e.to[0] === address).length;

/** Each test starts from no orders and a fresh simulator. */
t.beforeEach(async () => {
  sim.reset();
  await deps.db.deleteFrom('payment_events').execute();
  await deps.db.deleteFrom('orders').execute();
});

const providerStatus = (order: TestOrder, status: ProviderPaymentStatus) =>
  sim.setPayment(order.providerRef, { status, amount: order.amount, currency: order.currency });

t.test(
  'limit 200 checks exactly the 200 oldest pending orders in the window; one tracking email per paid order, webhooks racing included',
  async (t) => {
    // 250 pending orders 1..250 minutes old (distinct ages: "oldest" is well defined), 20 pending ones older
    // than the window and 30 already paid ones: the provider says "succeeded" for all of the latter.
    const inWindow = await insertOrders(
      deps.db,
      Array.from({ length: 250 }, (_, i) => ({ ageMinutes: i + 1, email: `sweep-${i}@example.com`, amount: 100 + i })),
    );
    const tooOld = await insertOrders(
      deps.db,
      Array.from({ length: 20 }, (_, i) => ({ ageMinutes: 25 * 60 + i })),
    );
    const alreadyPaid = await insertOrders(
      deps.db,
      Array.from({ length: 30 }, (_, i) => ({ ageMinutes: 300 + i, status: 'paid' as const })),
    );
    for (const order of [...tooOld, ...alreadyPaid]) providerStatus(order, 'succeeded');

    // Provider statuses by position: succeeded, failed, expired, pending, unknown (404).
    const kinds = ['succeeded', 'failed', 'expired', 'pending', 'unknown'] as const;
    inWindow.forEach((order, i) => {
      const kind = kinds[i % 5];
      if (kind !== 'unknown') providerStatus(order, kind);
    });
    const oldest200 = inWindow.slice(50); // ages 51..250 minutes
    const newest50 = inWindow.slice(0, 50);
    const expected = { succeeded: 0, failed: 0, expired: 0, unchanged: 0 };
    oldest200.forEach((_, j) => {
      const kind = kinds[(j + 50) % 5];
      if (kind === 'pending' || kind === 'unknown') expected.unchanged += 1;
      else expected[kind] += 1;
    });
    const succeeded = oldest200.filter((_, j) => kinds[(j + 50) % 5] === 'succeeded');

    // Latency so the sweep takes a while; webhooks for 15 of the succeeded orders arrive meanwhile.
    sim.configure({ latencyMs: 15 });
    const racing = succeeded.filter((_, j) => j % 3 === 0).slice(0, 15);
    const progress: SweepProgress[] = [];
    const [summary, webhookReplies] = await Promise.all([
      runPaymentsSweep({ windowHours: 24, limit: 200 }, deps, { onProgress: (p) => void progress.push(p) }),
      (async () => {
        // Once the sweep is asking the provider, the webhooks race it.
        await waitFor(() => sim.requests.size > 0 || undefined, 10000, 'the sweep to start');
        return Promise.all(racing.map((order) => sendWebhook(app, paymentEvent(order))));
      })(),
    ]);
    t.ok(
      webhookReplies.every((r) => r.statusCode === 200),
      'webhooks accepted',
    );

    t.equal(summary.checked, 200, 'checked 200');
    t.equal(summary.failed, expected.failed);
    t.equal(summary.expired, expected.expired);
    t.equal(summary.errors, 0);
    const settledByWebhook = expected.succeeded - summary.paid;
    t.ok(settledByWebhook >= 0 && settledByWebhook <= racing.length, `webhooks settled ${settledByWebhook} of the racing orders first`);
    t.equal(summary.unchanged, expected.unchanged + settledByWebhook, 'orders a webhook settled first count as unchanged');
    t.equal(summary.paid + summary.failed + summary.expired + summary.unchanged + summary.errors, summary.checked);
    t.type(summary.durationMs, 'number');

    t.same(
      [...sim.requests.keys()].sort(),
      oldest200.map((o) => o.providerRef).sort(),
      'the provider was asked about exactly the 200 oldest in-window pending orders, once each',
    );
    t.ok([...sim.requests.values()].every((n) => n === 1));
    t.ok(sim.maxInFlight <= 4, `at most PAYMENTS_RECONCILE_CONCURRENCY lookups at once (saw ${sim.maxInFlight})`);
    t.ok(sim.maxInFlight >= 2, 'lookups ran in parallel');

    const expectedStatus = (j: number) =>
      ({ succeeded: 'paid', failed: 'failed', expired: 'expired', pending: 'pending', unknown: 'pending' })[kinds[(j + 50) % 5]];
    t.same(
      await statusesOf(oldest200),
      oldest200.map((_, j) => expectedStatus(j)),
      'each order moved as the provider said',
    );
    t.ok(
      (await statusesOf(newest50)).every((s) => s === 'pending'),
      'the 50 newest were left for the next sweep',
    );
    t.ok(
      (await statusesOf(tooOld)).every((s) => s === 'pending'),
      'orders older than the window untouched',
    );
    t.ok(
      (await statusesOf(alreadyPaid)).every((s) => s === 'paid'),
      'paid orders untouched',
    );

    t.ok(progress.length >= 2, 'progress reported along the way');
    t.match(progress.at(-1), { total: 200, checked: 200 });

    await smtp.waitForEmails(succeeded.length, 60000);
    await waitForOutboxDrained(deps, { timeoutMs: 60000 });
    t.equal(smtp.received.length, succeeded.length, 'one email per paid order, no more');
    t.ok(
      succeeded.every((o) => emailsTo(o.email) === 1),
      'exactly one tracking email each',
    );
    t.equal(await trackingJobCount(), succeeded.length, 'one outbox job per paid order');

    // A second sweep finds the rest: the 50 newest plus the still-pending ones.
    const again = await runPaymentsSweep({ windowHours: 24, limit: 200 }, deps);
    t.equal(again.checked, 50 + expected.unchanged);
    t.equal(again.paid, newest50.filter((_, i) => kinds[i % 5] === 'succeeded').length);
  },
);

t.test('two concurrent sweeps: exactly one tracking email', async (t) => {
  const orders = await insertOrders(
    deps.db,
    Array.from({ length: 20 }, (_, i) => ({ ageMinutes: i + 1, email: `race-${i}@example.com` })),
  );
  for (const order of orders) providerStatus(order, 'succeeded');
  const before = smtp.received.length;
  // Two sweeps at once race on every order.
  const [a, b] = await Promise.all([
    runPaymentsSweep({ windowHours: 1, limit: 50 }, deps),
    runPaymentsSweep({ windowHours: 1, limit: 50 }, deps),
  ]);
  t.equal(a.paid + b.paid, 20, 'each order paid by exactly one sweep');
  // A sweep that selects after the other settled some orders never checks them; every check that did not pay saw the order settled.
  t.equal(a.unchanged + b.unchanged, a.checked + b.checked - 20, 'every other check saw it settled');
  await waitFor(() => smtp.received.length >= before + 20 || undefined, 60000, '20 emails');
  await waitForOutboxDrained(deps, { timeoutMs: 60000 });
  t.ok(
    orders.every((o) => emailsTo(o.email) === 1),
    'one email per order',
  );
});

t.test('--dry-run semantics: counts what would happen, changes nothing', async (t) => {
  const orders = await insertOrders(
    deps.db,
    Array.from({ length: 8 }, (_, i) => ({ ageMinutes: i + 1 })),
  );
  providerStatus(orders[0], 'succeeded');
  providerStatus(orders[1], 'succeeded');
  providerStatus(orders[2], 'failed');
  providerStatus(orders[3], 'expired');
  providerStatus(orders[4], 'pending');
  sim.setPayment(orders[5].providerRef, { status: 'succeeded', amount: orders[5].amount + 1, currency: 'USD' });
  sim.failReference(orders[6].providerRef, 500);
  const jobsBefore = await trackingJobCount();
  const summary = await runPaymentsSweep({ windowHours: 1, limit: 100, dryRun: true }, deps);
  t.match(summary, { checked: 8, paid: 2, failed: 1, expired: 1, unchanged: 2, errors: 2 });
  t.ok(
    (await statusesOf(orders)).every((s) => s === 'pending'),
    'every order still pending',
  );
  t.equal(await trackingJobCount(), jobsBefore, 'no outbox job');
});

t.test('provider 500/429/timeouts and mismatches count as errors; the others settle; the queued job completes', async (t) => {
  const orders = await insertOrders(
    deps.db,
    Array.from({ length: 20 }, (_, i) => ({ ageMinutes: i + 1, email: `job-${i}@example.com` })),
  );
  const ok = orders.slice(0, 5);
  const pending = orders.slice(5, 10);
  const failing = orders.slice(10, 18);
  const mismatched = orders.slice(18);
  for (const order of ok) providerStatus(order, 'succeeded');
  for (const order of pending) providerStatus(order, 'pending');
  const modes = [500, 500, 503, 429, 429, 429, 'timeout', 'timeout'] as const;
  failing.forEach((order, i) => {
    providerStatus(order, 'succeeded');
    sim.failReference(order.providerRef, modes[i]);
  });
  sim.setPayment(mismatched[0].providerRef, { status: 'succeeded', amount: mismatched[0].amount + 1, currency: 'USD' });
  sim.setPayment(mismatched[1].providerRef, { status: 'succeeded', amount: mismatched[1].amount, currency: 'EUR' });

  const events = new QueueEvents(PAYMENTS_RECONCILE_QUEUE, {
    connection: { url: errand.config.REDIS_URL, maxRetriesPerRequest: null },
    prefix: errand.config.QUEUE_PREFIX,
  });
  t.teardown(() => events.close());
  await events.waitUntilReady();
  const progressSeen: unknown[] = [];
  events.on('progress', ({ data }) => progressSeen.push(data));

  const jobId = await enqueuePaymentsSweep(deps.queues, { windowHours: 1, limit: 100 });
  const job = (await deps.queues[PAYMENTS_RECONCILE_QUEUE].getJob(jobId))!;
  const summary = (await job.waitUntilFinished(events, 60000)) as SweepSummary;
  t.match(summary, { checked: 20, paid: 5, failed: 0, expired: 0, unchanged: 5, errors: 10 });
  const finished = (await deps.queues[PAYMENTS_RECONCILE_QUEUE].getJob(jobId))!;
  t.equal(await finished.getState(), 'completed', 'the job completed despite the errors');
  t.match(finished.progress, { total: 20, checked: 20, errors: 10 });
  t.ok(progressSeen.length >= 1, 'progress events published');

  t.ok((await statusesOf(ok)).every((s) => s === 'paid'));
  t.ok(
    (await statusesOf([...pending, ...failing, ...mismatched])).every((s) => s === 'pending'),
    'errors leave orders pending',
  );
  await waitFor(() => ok.every((o) => emailsTo(o.email) === 1) || undefined, 30000, 'tracking emails');

  const lines = errand.logs.lines();
  const mismatchLines = lines.filter((l) => l.msg === 'provider amount or currency differs from the order; order left unchanged');
  for (const order of mismatched)
    t.ok(
      mismatchLines.some((l) => l.orderId === order.id),
      'each mismatch logged with its order id',
    );
  t.notOk(
    mismatchLines.some((l) => 'amount' in l || 'currency' in l || 'providerRef' in l),
    'and nothing else about the payment',
  );
  t.ok(
    lines.some((l) => l.msg === 'payments sweep finished' && (l.summary as SweepSummary).errors === 10),
    'one summary line',
  );
  t.ok(
    lines.some((l) => l.queue === PAYMENTS_RECONCILE_QUEUE && l.event === 'completed' && l.jobId === jobId),
    'job lifecycle logged',
  );

  // Once the provider recovers, the next sweep settles them.
  for (const order of failing) sim.failReference(order.providerRef, null);
  const after = await runPaymentsSweep({ windowHours: 1, limit: 100 }, deps);
  t.match(after, { checked: 15, paid: 8, errors: 2 });
});

t.test('an invalid payments-sweep payload fails at once without retries', async (t) => {
  const queue = deps.queues[PAYMENTS_RECONCILE_QUEUE];
  const job = await queue.add('payments-sweep', { windowHours: '24', limit: 10 }, { jobId: 'bad-sweep-payload', attempts: 3 });
  const failed = await waitFor(async () => ((await job.isFailed()) ? queue.getJob(job.id!) : undefined), 30000, 'job failed');
  t.equal(failed.attemptsMade, 1);
  t.match(failed.failedReason, /invalid payments-sweep payload/);
  t.equal(await statusOf((await insertOrders(deps.db, [{ ageMinutes: 1 }]))[0].id), 'pending');
});

t.test('logs of the sweep carry no email address', async (t) => {
  t.notOk(/[a-z0-9._%+-]{2,}@example\.com/i.test(errand.logs.raw.join('\n')));
});
