import t from 'tap';
import { sql } from 'kysely';
import { composeOrderTrackingEmail } from '../../src/payments/tracking-email.js';
import { insertOrder, prepareFindOrders } from '../../src/db/orders.js';
import { countingDb, startTestErrand, testEnv } from '../support/helpers.js';

// The composer alone (ROLE=api: no worker runs it on its own): what a tracking-link email job reads before sending.
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
const { db } = errand.deps;
// The composer's own pool, counting the order reads it sends.
const { data: composerData, counter: reads } = countingDb(t, errand.config.DATABASE_URL, /from "orders"/i);
const compose = composeOrderTrackingEmail({
  statements: { findOrder: prepareFindOrders(composerData) },
  config: errand.config,
  trackingKey: errand.deps.trackingKey,
});
const job = {} as Parameters<typeof compose>[1];
const newOrder = async (email: string, status: 'pending' | 'paid') => {
  const order = await insertOrder(db, { email, amount: 1999, currency: 'EUR', providerRef: `ref-${email}` });
  if (status === 'paid') await sql`update orders set status = 'paid', paid_at = now() where id = ${order.id}`.execute(db);
  return order.id;
};

t.test('a paid order: the email goes to its address with a tracking link for that order', async (t) => {
  const id = await newOrder('paid@example.com', 'paid');
  const email = await compose({ orderId: id }, job);
  t.equal(email?.to, 'paid@example.com');
  t.match(email?.text, new RegExp(`/orders/${id}/tracking\\?token=[A-Za-z0-9_-]{20,}`));
});

t.test('jobs composed at once (the reads are shared) each get their own order, or nothing', async (t) => {
  const paid = await Promise.all(['p1@example.com', 'p2@example.com', 'p3@example.com'].map((e) => newOrder(e, 'paid')));
  const pending = await newOrder('pending@example.com', 'pending');
  const readsBefore = reads.matches;
  const emails = await Promise.all([
    ...paid.map((orderId) => compose({ orderId }, job)),
    compose({ orderId: pending }, job), // not paid: nothing to send
    compose({ orderId: '00000000-0000-4000-8000-000000000000' }, job), // no such order
    compose({ orderId: paid[1].toUpperCase() }, job), // the same order, written in upper case
  ]);
  t.same(
    emails.map((e) => e?.to ?? null),
    ['p1@example.com', 'p2@example.com', 'p3@example.com', null, null, 'p2@example.com'],
  );
  t.equal(reads.matches - readsBefore, 1, 'six jobs, one read of the orders');
  t.match(emails[1]?.text, new RegExp(`/orders/${paid[1]}/tracking`), 'each email links its own order');
  t.match(emails[2]?.text, new RegExp(`/orders/${paid[2]}/tracking`));
});
