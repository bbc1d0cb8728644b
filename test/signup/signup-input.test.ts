import t from 'tap';
import { startTestErrand, testEnv } from '../support/helpers.js';

// No SMTP here: nothing may be written, so nothing may be sent.
const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
const { app, deps } = errand;

async function counts() {
  const users = await deps.db
    .selectFrom('users')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  const outbox = await deps.db
    .selectFrom('outbox')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return { users: Number(users.n), outbox: Number(outbox.n) };
}

const json = { 'content-type': 'application/json' };
const cases: { name: string; payload?: string; headers?: Record<string, string>; status: number; message: RegExp }[] = [
  { name: 'invalid email', payload: JSON.stringify({ email: 'not-an-email' }), headers: json, status: 400, message: /email/ },
  {
    name: 'unknown property',
    payload: JSON.stringify({ email: 'a@example.com', admin: true }),
    headers: json,
    status: 400,
    message: /additional properties/,
  },
  {
    name: 'email of the wrong type',
    payload: JSON.stringify({ email: 12345 }),
    headers: json,
    status: 400,
    message: /email must be string/,
  },
  {
    name: 'name of the wrong type',
    payload: JSON.stringify({ email: 'a@example.com', name: 7 }),
    headers: json,
    status: 400,
    message: /name must be string/,
  },
  { name: 'missing body', headers: json, status: 400, message: /body/i },
  { name: 'body that is not an object', payload: '"a@example.com"', headers: json, status: 400, message: /body must be object/ },
  { name: 'malformed JSON', payload: '{"email": ', headers: json, status: 400, message: /JSON/ },
  {
    name: 'non-JSON content type',
    payload: 'email=a@example.com',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    status: 415,
    message: /Unsupported Media Type/,
  },
  {
    name: '17 KiB body',
    payload: JSON.stringify({ email: 'a@example.com', name: 'x'.repeat(17 * 1024) }),
    headers: json,
    status: 413,
    message: /too large/i,
  },
];

for (const c of cases) {
  t.test(`signup with ${c.name} → ${c.status}, nothing written`, async (t) => {
    const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: c.payload, headers: c.headers });
    t.equal(res.statusCode, c.status);
    const body = res.json();
    t.equal(body.statusCode, c.status, 'Fastify error shape');
    t.type(body.error, 'string');
    t.match(body.message, c.message, 'message names the problem');
    t.same(await counts(), { users: 0, outbox: 0 });
  });
}

t.test('verify-email without a token → 400', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/auth/verify-email' });
  t.equal(res.statusCode, 400);
  t.match(res.json().message, /token/);
});

t.test('a valid signup is accepted (the cases above fail for their own reason)', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'ok@example.com', name: 'Ok' } });
  t.equal(res.statusCode, 202);
  t.same(await counts(), { users: 1, outbox: 1 });
});

t.test('an empty name is a valid string: 202, stored as no name', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'noname@example.com', name: '' } });
  t.equal(res.statusCode, 202);
  const user = await deps.db.selectFrom('users').select('name').where('email', '=', 'noname@example.com').executeTakeFirstOrThrow();
  t.equal(user.name, null);
});
