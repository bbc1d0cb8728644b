import t from 'tap';
import { findSuppression, recordEmailEvents } from '../../src/db/suppressions.js';
import { startTestErrand, testEnv } from '../support/helpers.js';

const ADMIN_TOKEN = 'test-admin-token-suppressions-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

t.test('ADMIN_TOKEN unset: no suppression routes', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
  for (const method of ['GET', 'PUT', 'DELETE'] as const)
    t.equal((await errand.app.inject({ method, url: '/admin/suppressions/a@example.com', headers: bearer })).statusCode, 404, method);
  t.equal((await errand.app.inject({ method: 'GET', url: '/admin/suppressions', headers: bearer })).statusCode, 404);
});

t.test('/admin/suppressions', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', ADMIN_TOKEN, EMAIL_SOFT_BOUNCE_LIMIT: '2' }));
  const { app } = errand;
  const db = errand.deps.db;
  const call = (method: 'GET' | 'PUT' | 'DELETE', url: string, headers: Record<string, string> = bearer) =>
    app.inject({ method, url, headers });

  t.test('401 without the bearer token', async (t) => {
    for (const [method, url] of [
      ['GET', '/admin/suppressions'],
      ['GET', '/admin/suppressions/a@example.com'],
      ['PUT', '/admin/suppressions/a@example.com'],
      ['DELETE', '/admin/suppressions/a@example.com'],
    ] as const) {
      t.equal((await call(method, url, {})).statusCode, 401, `${method} ${url}`);
      t.equal((await call(method, url, { authorization: 'Bearer wrong-token-0123456789' })).statusCode, 401);
    }
    t.equal(await findSuppression(db, 'a@example.com'), null, 'the refused PUT suppressed nothing');
  });

  t.test('PUT, GET (any case), list, DELETE', async (t) => {
    const put = await call('PUT', '/admin/suppressions/Someone@Example.com');
    t.equal(put.statusCode, 200);
    t.match(put.json(), { email: 'someone@example.com', reason: 'manual', source: 'admin', createdAt: /^\d{4}-/ });
    t.same((await call('GET', '/admin/suppressions/SOMEONE@example.COM')).json(), put.json());
    t.same(await findSuppression(db, 'someone@example.com'), { reason: 'manual' });
    t.equal((await call('GET', '/admin/suppressions/nobody@example.com')).statusCode, 404);
    t.equal((await call('PUT', '/admin/suppressions/not-an-address')).statusCode, 400);
    t.equal((await call('PUT', '/admin/suppressions/a%00b@example.com')).statusCode, 400);

    for (const x of ['a', 'b', 'c']) await call('PUT', `/admin/suppressions/${x}@example.com`);
    const first = (await call('GET', '/admin/suppressions?limit=2')).json<{ items: { email: string }[]; nextCursor: string }>();
    t.equal(first.items.length, 2);
    t.equal(first.items[0].email, 'c@example.com', 'newest first');
    const second = (await call('GET', `/admin/suppressions?limit=2&cursor=${first.nextCursor}`)).json<{
      items: { email: string }[];
      nextCursor: null;
    }>();
    t.same(
      second.items.map((i) => i.email),
      ['a@example.com', 'someone@example.com'],
    );
    t.equal(second.nextCursor, null);
    t.equal((await call('GET', '/admin/suppressions?limit=0')).statusCode, 400);
    t.equal((await call('GET', '/admin/suppressions?limit=x')).statusCode, 400);
    t.equal((await call('GET', '/admin/suppressions?cursor=bogus')).statusCode, 400);

    t.equal((await call('DELETE', '/admin/suppressions/SomeOne@example.com')).statusCode, 204);
    t.equal(await findSuppression(db, 'someone@example.com'), null);
    t.equal((await call('DELETE', '/admin/suppressions/someone@example.com')).statusCode, 404);
  });

  t.test('lifting starts the soft-bounce count afresh', async (t) => {
    const policy = { limit: 2, windowDays: 7 };
    const soft = (id: string) => ({
      provider: 'sendgrid',
      eventId: id,
      email: 'soft@example.com',
      kind: 'soft_bounce' as const,
      at: new Date(),
    });
    await recordEmailEvents(db, [soft('s1'), soft('s2')], policy);
    t.match((await call('GET', '/admin/suppressions/soft@example.com')).json(), { reason: 'soft-bounces', source: 'sendgrid' });
    t.equal((await call('DELETE', '/admin/suppressions/soft@example.com')).statusCode, 204);
    await recordEmailEvents(db, [soft('s3')], policy);
    t.equal((await call('GET', '/admin/suppressions/soft@example.com')).statusCode, 404, 'one soft bounce since the lift');
    await recordEmailEvents(db, [soft('s4')], policy);
    t.equal((await call('GET', '/admin/suppressions/soft@example.com')).statusCode, 200, 'two since the lift');
  });
});
