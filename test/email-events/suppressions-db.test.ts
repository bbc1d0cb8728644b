import t from 'tap';
import { createDb } from '../../src/db/pool.js';
import {
  decodeCursor,
  deleteSuppression,
  findSuppression,
  getSuppression,
  listSuppressions,
  putSuppression,
  recordEmailEvents,
  type EmailEventRow,
} from '../../src/db/suppressions.js';
import { freshDatabaseUrl } from '../support/helpers.js';

const policy = { limit: 3, windowDays: 7 };
let n = 0;
const event = (email: string, kind: EmailEventRow['kind'], at = new Date(), provider = 'sendgrid'): EmailEventRow => ({
  provider,
  eventId: `evt-${(n += 1)}`,
  email,
  kind,
  at,
});

t.test('suppression statements', async (t) => {
  const db = createDb(freshDatabaseUrl(t), 4);
  t.teardown(() => db.destroy());

  t.test('a hard bounce and a complaint suppress at once; the same event again counts once', async (t) => {
    const hard = event('hard@example.com', 'hard_bounce');
    const first = await recordEmailEvents(db, [hard], policy);
    t.match(first, {
      replayed: false,
      recorded: [{ email: 'hard@example.com', kind: 'hard_bounce' }],
      suppressed: [{ email: 'hard@example.com', reason: 'hard-bounce' }],
    });
    const again = await recordEmailEvents(db, [hard], policy);
    t.same(again, { replayed: false, recorded: [], suppressed: [] }, 'repeated delivery changes nothing');
    const complaint = await recordEmailEvents(db, [event('c@example.com', 'complaint', new Date(), 'ses')], policy);
    t.match(complaint, { suppressed: [{ email: 'c@example.com', reason: 'complaint' }] });
    t.match(await getSuppression(db, 'C@Example.COM'), { email: 'c@example.com', reason: 'complaint', source: 'ses' });
  });

  t.test('findSuppression ignores case; null for an address not suppressed', async (t) => {
    t.same(await findSuppression(db, 'HARD@example.com'), { reason: 'hard-bounce' });
    t.same(await findSuppression(db, ' hard@EXAMPLE.com '), { reason: 'hard-bounce' });
    t.equal(await findSuppression(db, 'nobody@example.com'), null);
  });

  t.test('soft bounces suppress at the limit within the window; old ones and repeats do not count', async (t) => {
    const email = 'soft@example.com';
    const old = new Date(Date.now() - 8 * 86400_000);
    t.match(await recordEmailEvents(db, [event(email, 'soft_bounce', old), event(email, 'soft_bounce', old)], policy), { suppressed: [] });
    const second = event(email, 'soft_bounce');
    t.match(await recordEmailEvents(db, [event(email, 'soft_bounce')], policy), { suppressed: [] });
    t.match(await recordEmailEvents(db, [second], policy), { suppressed: [] });
    t.match(await recordEmailEvents(db, [second], policy), { suppressed: [] }, 'the same event again is not a third');
    t.equal(await findSuppression(db, email), null);
    t.match(await recordEmailEvents(db, [event(email, 'soft_bounce')], policy), { suppressed: [{ email, reason: 'soft-bounces' }] });
    t.same(await findSuppression(db, email), { reason: 'soft-bounces' });
  });

  t.test('concurrent soft bounces of one address still reach the limit', async (t) => {
    const email = 'race@example.com';
    await Promise.all([1, 2, 3].map(() => recordEmailEvents(db, [event(email, 'soft_bounce')], policy)));
    t.same(await findSuppression(db, email), { reason: 'soft-bounces' });
  });

  t.test('lifting a suppression: the address may be emailed and its soft count starts afresh', async (t) => {
    const email = 'soft@example.com';
    t.equal(await deleteSuppression(db, 'SOFT@example.com'), true);
    t.equal(await deleteSuppression(db, email), false, 'nothing left to lift');
    t.equal(await findSuppression(db, email), null);
    await recordEmailEvents(db, [event(email, 'soft_bounce')], policy);
    await recordEmailEvents(db, [event(email, 'soft_bounce')], policy);
    t.equal(await findSuppression(db, email), null, 'two soft bounces since the lift are under the limit of 3');
    await recordEmailEvents(db, [event(email, 'soft_bounce')], policy);
    t.same(await findSuppression(db, email), { reason: 'soft-bounces' });
  });

  t.test('a delivery token is good once, and its events are not recorded the second time', async (t) => {
    const token = { provider: 'mailgun', token: 'tok-1', signedAt: new Date() };
    const e = event('token@example.com', 'complaint', new Date(), 'mailgun');
    t.match(await recordEmailEvents(db, [e], policy, token), { replayed: false, suppressed: [{ reason: 'complaint' }] });
    t.same(await recordEmailEvents(db, [event('other@example.com', 'complaint')], policy, token), { replayed: true });
    t.equal(await findSuppression(db, 'other@example.com'), null);
  });

  t.test('manual suppressions, and an address already suppressed keeps its reason', async (t) => {
    const manual = await putSuppression(db, 'Manual@Example.com');
    t.match(manual, { email: 'manual@example.com', reason: 'manual', source: 'admin' });
    t.type(manual.createdAt, Date);
    t.match(await putSuppression(db, 'manual@example.com'), { reason: 'manual', createdAt: manual.createdAt });
    t.match(await putSuppression(db, 'c@example.com'), { reason: 'complaint', source: 'ses' });
    const both = await Promise.all([putSuppression(db, 'same@example.com'), putSuppression(db, 'same@example.com')]);
    t.same(both[0], both[1], 'two PUTs at once answer the same item');
  });

  t.test('list: newest first, a cursor per page, every row once', async (t) => {
    // Several rows in one transaction share created_at: the address breaks the tie.
    await recordEmailEvents(
      db,
      ['a', 'b', 'c', 'd', 'e'].map((x) => event(`tie-${x}@example.com`, 'hard_bounce')),
      policy,
    );
    const all: string[] = [];
    let cursor: string | null | undefined;
    do {
      const page = await listSuppressions(db, { limit: 2, cursor: cursor ? decodeCursor(cursor) : undefined });
      t.ok(page.items.length <= 2);
      all.push(...page.items.map((item) => item.email));
      cursor = page.nextCursor;
    } while (cursor && all.length < 100);
    const full = await listSuppressions(db, { limit: 100 });
    t.same(
      all,
      full.items.map((item) => item.email),
      'pages join into the whole list',
    );
    t.equal(new Set(all).size, all.length, 'no row twice');
    t.equal(full.nextCursor, null);
    const times = full.items.map((item) => item.createdAt.getTime());
    t.same(
      times,
      [...times].sort((a, b) => b - a),
      'newest first',
    );
    t.equal(decodeCursor('not-a-cursor'), undefined);
    t.equal(decodeCursor(Buffer.from('["x","y"]').toString('base64url')), undefined);
  });
});
