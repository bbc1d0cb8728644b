// Scenario 4: signed POST /payments/webhook `payment.succeeded` for distinct pending orders, flat out;
// and 1000 concurrent deliveries of one event id → exactly one tracking email at the SMTP sink.
import { createHmac, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { sql } from 'kysely';
import { createDb } from '../src/db/pool.js';
import type { Db } from '../src/db/schema.js';
import { ORDER_TRACKING_LINK_JOB } from '../src/email/jobs.js';
import {
  errandEnv,
  freePort,
  freshDatabaseUrl,
  freshQueuePrefix,
  machineInfo,
  onCleanup,
  progress,
  report,
  round,
  runScenario,
  RUN_SECONDS,
  sleep,
  spawnServer,
  startSmtpSink,
  summariseLoad,
  type LoadSummary,
} from './lib.js';

const SECRET = 'bench-webhook-secret-0123456789';
const MAX_CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** Pending orders created up front; each flat-out request settles a different one. */
const ORDERS = Number(process.env.BENCH_WEBHOOK_ORDERS ?? 30_000);
const DUPLICATES = 1000;
const DUPLICATE_CONNECTIONS = 100;
const AMOUNT = 1999;
const CURRENCY = 'USD';

interface PendingOrder {
  id: string;
  providerRef: string;
  email: string;
}

/** Signs as the contract says (and as test/support/payments.ts does), independently of errand's code. */
function signatureHeader(rawBody: string): string {
  const t = Math.floor(Date.now() / 1000);
  return `t=${t},v1=${createHmac('sha256', SECRET).update(`${t}.${rawBody}`).digest('hex')}`;
}

function succeededEvent(order: PendingOrder, id = `evt_${randomBytes(8).toString('hex')}`): string {
  return JSON.stringify({ id, type: 'payment.succeeded', data: { providerRef: order.providerRef, amount: AMOUNT, currency: CURRENCY } });
}

/** Straight INSERTs, 1000 rows a statement: the orders route is not what this scenario measures. */
async function insertPendingOrders(db: Db, count: number, email?: string): Promise<PendingOrder[]> {
  const orders: PendingOrder[] = [];
  for (let done = 0; done < count; done += 1000) {
    const values = Array.from({ length: Math.min(1000, count - done) }, () => {
      const tag = randomBytes(8).toString('hex');
      return { email: email ?? `buyer-${tag}@example.com`, amount: AMOUNT, currency: CURRENCY, provider_ref: `pay_${tag}` };
    });
    const rows = await db.insertInto('orders').values(values).returning(['id', 'provider_ref', 'email']).execute();
    orders.push(...rows.map((row) => ({ id: row.id, providerRef: row.provider_ref, email: row.email })));
  }
  return orders;
}

/**
 * Flat out over the orders from `cursor.next` on, one distinct order per request.
 * Bodies are signed just before the run (timestamps must be within 300 s).
 */
async function webhookLoad(
  url: string,
  run: string,
  orders: PendingOrder[],
  cursor: { next: number },
  durationS: number,
  connections: number,
): Promise<LoadSummary & { exhausted: boolean }> {
  const signed = orders.slice(cursor.next).map((order) => {
    const body = succeededEvent(order);
    return { body, header: signatureHeader(body) };
  });
  let used = 0;
  let exhausted = false;
  const result = await autocannon({
    url: `${url}/payments/webhook`,
    connections,
    duration: durationS,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        setupRequest: (request) => {
          // Out of fresh orders: repeat the last one (a duplicate) and say so in the result.
          const next = signed[Math.min(used, signed.length - 1)];
          if (used >= signed.length) exhausted = true;
          used += 1;
          return { ...request, headers: { 'content-type': 'application/json', 'webhook-signature': next.header }, body: next.body };
        },
      },
    ],
  });
  cursor.next += Math.min(used, signed.length);
  return { ...summariseLoad(run, 'max', result), exhausted };
}

function medianByRps<T extends LoadSummary>(runs: T[]): T {
  return [...runs].sort((a, b) => a.rps - b.rps)[Math.floor(runs.length / 2)];
}

await runScenario('webhook', async () => {
  const machine = await machineInfo();
  const sink = await startSmtpSink();
  const databaseUrl = freshDatabaseUrl();
  const env = errandEnv({
    PORT: String(await freePort()),
    DATABASE_URL: databaseUrl,
    QUEUE_PREFIX: freshQueuePrefix(),
    SMTP_URL: sink.url,
    PAYMENT_WEBHOOK_SECRET: SECRET,
  });

  progress('starting errand (role all)');
  const errand = await spawnServer('src/main.ts', env);
  const db = createDb(databaseUrl, 2);
  onCleanup('close bench db pool', () => db.destroy());

  // Duplicates first, on an otherwise idle errand: after the load runs thousands of tracking emails
  // would be queued ahead of this one behind the default limiter (1 per 150 ms).
  progress(`duplicates: ${DUPLICATES} deliveries of one event id, ${DUPLICATE_CONNECTIONS} connections`);
  const dupEmail = `dup-${randomBytes(4).toString('hex')}@example.com`;
  const [dupOrder] = await insertPendingOrders(db, 1, dupEmail);
  const dupEventId = `evt_dup_${randomBytes(8).toString('hex')}`;
  const dupBody = succeededEvent(dupOrder, dupEventId);
  const dupHeader = signatureHeader(dupBody);
  const answers = { received: 0, duplicate: 0, other: 0 };
  const dupResult = await autocannon({
    url: `${errand.url}/payments/webhook`,
    connections: DUPLICATE_CONNECTIONS,
    amount: DUPLICATES,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'webhook-signature': dupHeader },
        body: dupBody,
        onResponse: (status, body) => {
          if (status !== 200) answers.other += 1;
          else if (body.includes('"duplicate":true')) answers.duplicate += 1;
          else answers.received += 1;
        },
      },
    ],
  });
  const dupLoad = summariseLoad('duplicates (one event id)', 'max', dupResult);
  const toDup = () => sink.recipients.filter((rcpts) => rcpts.includes(dupEmail)).length;
  const waitStarted = performance.now();
  while (toDup() === 0 && performance.now() - waitStarted < 30_000) await sleep(20);
  const firstEmailAfterLastAnswerMs = round(performance.now() - waitStarted, 0);
  await sleep(3000);
  const { rows: dupRows } = await sql<{ events: string; outbox: string; status: string }>`
    SELECT (SELECT count(*) FROM payment_events WHERE event_id = ${dupEventId}) AS events,
           (SELECT count(*) FROM outbox WHERE job_name = ${ORDER_TRACKING_LINK_JOB} AND payload->>'orderId' = ${dupOrder.id}) AS outbox,
           (SELECT status FROM orders WHERE id = ${dupOrder.id}) AS status`.execute(db);
  const duplicates = {
    deliveries: DUPLICATES,
    answered200: answers.received + answers.duplicate,
    answeredReceived: answers.received,
    answeredDuplicate: answers.duplicate,
    otherAnswers: answers.other + dupLoad.errors + dupLoad.timeouts,
    p50: dupLoad.p50,
    p99: dupLoad.p99,
    rps: dupLoad.rps,
    orderStatus: dupRows[0]?.status,
    paymentEventRows: Number(dupRows[0]?.events),
    trackingOutboxRows: Number(dupRows[0]?.outbox),
    trackingEmailsAtSink: toDup(),
    firstEmailAfterLastAnswerMs,
  };
  const exactlyOnce =
    duplicates.trackingEmailsAtSink === 1 &&
    duplicates.trackingOutboxRows === 1 &&
    duplicates.answeredReceived === 1 &&
    duplicates.answeredDuplicate === DUPLICATES - 1;
  progress(`duplicates: ${JSON.stringify(duplicates)}`);

  progress(`inserting ${ORDERS} pending orders`);
  const orders = await insertPendingOrders(db, ORDERS);
  const cursor = { next: 0 };
  progress(`warm-up ${Math.min(3, RUN_SECONDS)} s`);
  await webhookLoad(errand.url, 'warm-up', orders, cursor, Math.min(3, RUN_SECONDS), 10);

  const runs: Array<LoadSummary & { exhausted: boolean }> = [];
  for (let i = 1; i <= ROUNDS; i++) {
    progress(`round ${i}/${ROUNDS}: webhook flat out, ${MAX_CONNECTIONS} connections, ${RUN_SECONDS} s`);
    runs.push(await webhookLoad(errand.url, `webhook flat out #${i}`, orders, cursor, RUN_SECONDS, MAX_CONNECTIONS));
  }
  const median = medianByRps(runs);

  // Every 2xx settled a distinct order: one paid order and one tracking job per accepted event.
  await sleep(500);
  const { rows: totals } = await sql<{ paid: string; outbox: string; distinct_orders: string }>`
    SELECT (SELECT count(*) FROM orders WHERE status = 'paid') AS paid,
           (SELECT count(*) FROM outbox WHERE job_name = ${ORDER_TRACKING_LINK_JOB}) AS outbox,
           (SELECT count(DISTINCT payload->>'orderId') FROM outbox WHERE job_name = ${ORDER_TRACKING_LINK_JOB}) AS distinct_orders`.execute(
    db,
  );
  const consistency = {
    ordersPaid: Number(totals[0]?.paid),
    trackingJobs: Number(totals[0]?.outbox),
    distinctOrdersWithJob: Number(totals[0]?.distinct_orders),
  };
  await errand.stop();

  const targets = {
    exactlyOneTrackingEmailFor1000Duplicates: exactlyOnce,
    noErrorsOrNon2xxFlatOut: runs.every((r) => r.errors === 0 && r.non2xx === 0 && r.timeouts === 0),
    oneTrackingJobPerPaidOrder:
      consistency.trackingJobs === consistency.ordersPaid && consistency.distinctOrdersWithJob === consistency.ordersPaid,
    enoughOrders: runs.every((r) => !r.exhausted),
  };
  report('webhook', machine, { runs, median: { rps: median.rps, p50: median.p50, p99: median.p99 }, duplicates, consistency, targets }, [
    ...runs.map(({ exhausted: _exhausted, ...r }) => ({ ...r })),
    { run: 'median webhook flat out', rps: median.rps, p50: median.p50, p99: median.p99 },
    { ...dupLoad, run: `${DUPLICATES} duplicates, ${DUPLICATE_CONNECTIONS} conn` },
    {
      run: `duplicates: 200 received / duplicate / other`,
      requests: `${duplicates.answeredReceived} / ${duplicates.answeredDuplicate} / ${duplicates.otherAnswers}`,
    },
    { run: `duplicates: tracking emails at sink (3 s after first)`, requests: duplicates.trackingEmailsAtSink },
    {
      run: 'orders paid / tracking jobs / distinct',
      requests: `${consistency.ordersPaid} / ${consistency.trackingJobs} / ${consistency.distinctOrdersWithJob}`,
    },
  ]);
});
