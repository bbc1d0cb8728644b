import t, { type Test } from 'tap';
import { insertVerificationToken } from '../../src/db/verification-tokens.js';
import { hashToken, mintVerificationToken } from '../../src/signup/tokens.js';
import { trackingToken } from '../../src/payments/tracking.js';
import { PAGE_CONTENT_SECURITY_POLICY } from '../../src/pages/layout.js';
import { startTestErrand, testEnv } from '../support/helpers.js';
import { createOrder, paymentEvent, sendWebhook, WEBHOOK_SECRET } from '../support/payments.js';

// HTTP-level behaviour of the pages (headers, negotiation, validation, JSON unchanged); the browser tests drive the same pages in Chromium.
const errand = await startTestErrand(t, testEnv(t, { PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
const { app, deps } = errand;

const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';
const FORM = 'application/x-www-form-urlencoded';
const tokensSeen: string[] = [];

/** An unverified user with a fresh, usable token (minted the way the email worker does). */
async function userWithToken(email: string, options: { expired?: boolean } = {}) {
  const user = await deps.db.insertInto('users').values({ email, name: null }).returning('id').executeTakeFirstOrThrow();
  const token = mintVerificationToken();
  const expiresAt = new Date(Date.now() + (options.expired ? -1000 : 3600_000));
  await insertVerificationToken(deps.db, { userId: user.id, hash: token.hash, expiresAt });
  tokensSeen.push(token.raw);
  return { userId: user.id, token: token.raw };
}

const tokenRow = (token: string) =>
  deps.db.selectFrom('email_verification_tokens').select('used_at').where('token_hash', '=', hashToken(token)).executeTakeFirstOrThrow();
const isVerified = async (userId: string) =>
  (await deps.db.selectFrom('users').select('verified_at').where('id', '=', userId).executeTakeFirstOrThrow()).verified_at !== null;

function assertPageHeaders(t: Test, res: { headers: Record<string, unknown> }) {
  t.equal(res.headers['content-type'], 'text/html; charset=utf-8');
  t.equal(res.headers['content-security-policy'], PAGE_CONTENT_SECURITY_POLICY);
  t.match(
    res.headers['content-security-policy'],
    /^default-src 'none'; style-src 'sha256-[A-Za-z0-9+/=]{44}'; form-action 'self'; frame-ancestors 'none'/,
  );
  t.equal(res.headers['x-frame-options'], 'DENY');
  t.equal(res.headers['referrer-policy'], 'no-referrer');
  t.equal(res.headers['cache-control'], 'no-store');
  t.equal(res.headers['x-content-type-options'], 'nosniff');
}

t.test('GET preferring HTML shows the confirm page, with every page header, and uses nothing', async (t) => {
  const { userId, token } = await userWithToken('reader@example.com');
  const res = await app.inject({ method: 'GET', url: `/auth/verify-email?token=${token}`, headers: { accept: BROWSER_ACCEPT } });
  t.equal(res.statusCode, 200);
  assertPageHeaders(t, res);
  t.equal(res.headers.vary, 'Accept', 'the same URL answers JSON too');
  t.match(res.body, /<h1>Confirm your email address for errand<\/h1>/);
  t.match(res.body, 'r***@example.com', 'address masked');
  t.notMatch(res.body, 'reader@example.com', 'never the full address');
  t.match(res.body, `<input type="hidden" name="token" value="${token}">`);
  t.match(res.body, /<form method="post" action="verify-email">/);
  t.notMatch(res.body, /<script/i, 'no script');
  t.equal((await tokenRow(token)).used_at, null, 'token unused');
  t.equal(await isVerified(userId), false, 'user not verified');

  // A scanner asking only for HTML, and a HEAD with no Accept at all (link checkers), use nothing either.
  const scanner = await app.inject({ method: 'GET', url: `/auth/verify-email?token=${token}`, headers: { accept: 'text/html' } });
  t.equal(scanner.statusCode, 200);
  const head = await app.inject({ method: 'HEAD', url: `/auth/verify-email?token=${token}` });
  t.equal(head.statusCode, 200);
  t.equal(head.body, '');
  t.equal((await tokenRow(token)).used_at, null, 'token still unused after a scanner GET and a HEAD');

  // An API client (no Accept) still verifies in one GET, as before.
  const api = await app.inject({ method: 'GET', url: `/auth/verify-email?token=${token}` });
  t.equal(api.statusCode, 200);
  t.same(api.json(), { status: 'verified' });
  t.equal(api.headers.vary, 'Accept');
  t.ok(await isVerified(userId), 'verified by the JSON GET');
});

t.test('GET refusals: a page for browsers saying what to do, the same JSON as before for API clients', async (t) => {
  const used = await userWithToken('used@example.com');
  await app.inject({ method: 'POST', url: '/auth/verify-email', payload: { token: used.token } });
  const expired = await userWithToken('expired@example.com', { expired: true });
  const cases: [string, string, RegExp][] = [
    ['used', `?token=${used.token}`, /already been used[\s\S]*already confirmed/],
    ['expired', `?token=${expired.token}`, /has expired[\s\S]*sign up again/],
    ['unknown', '?token=nope', /does not work[\s\S]*Sign up again/],
    ['missing token', '', /does not work/],
    ['repeated token', `?token=a&token=b`, /does not work/],
  ];
  for (const [what, query, text] of cases) {
    const page = await app.inject({ method: 'GET', url: `/auth/verify-email${query}`, headers: { accept: BROWSER_ACCEPT } });
    t.equal(page.statusCode, 400, `${what}: 400 page`);
    assertPageHeaders(t, page);
    t.match(page.body, text, `${what}: says what happened and what to do`);
    const json = await app.inject({ method: 'GET', url: `/auth/verify-email${query}`, headers: { accept: 'application/json' } });
    t.equal(json.statusCode, 400, `${what}: 400 JSON`);
    t.match(json.headers['content-type'], /^application\/json/);
    t.match(json.json(), { statusCode: 400, error: 'Bad Request', message: String });
  }
  const missing = await app.inject({ method: 'GET', url: '/auth/verify-email' });
  t.match(missing.json().message, /token/, 'the validation message names the field');
  t.equal(await isVerified(expired.userId), false);
});

t.test('POST: a form gets pages, JSON gets JSON; only POST and the JSON GET use the token', async (t) => {
  const form = await userWithToken('form@example.com');
  const ok = await app.inject({
    method: 'POST',
    url: '/auth/verify-email',
    headers: { 'content-type': FORM, accept: BROWSER_ACCEPT },
    payload: `token=${encodeURIComponent(form.token)}`,
  });
  t.equal(ok.statusCode, 200);
  assertPageHeaders(t, ok);
  t.match(ok.body, /<h1>Your email address is confirmed<\/h1>/);
  t.ok(await isVerified(form.userId));
  t.not((await tokenRow(form.token)).used_at, null, 'token used');

  const twice = await app.inject({
    method: 'POST',
    url: '/auth/verify-email',
    headers: { 'content-type': FORM },
    payload: `token=${encodeURIComponent(form.token)}`,
  });
  t.equal(twice.statusCode, 400, 'a second click (double submit) is refused');
  t.match(twice.body, /already been used/, 'and says the address is confirmed');

  const json = await userWithToken('json@example.com');
  const jsonOk = await app.inject({ method: 'POST', url: '/auth/verify-email', payload: { token: json.token } });
  t.equal(jsonOk.statusCode, 200);
  t.same(jsonOk.json(), { status: 'verified' });
  t.ok(await isVerified(json.userId));
  const jsonAgain = await app.inject({ method: 'POST', url: '/auth/verify-email', payload: { token: json.token } });
  t.equal(jsonAgain.statusCode, 400);
  t.same(jsonAgain.json(), { statusCode: 400, error: 'Bad Request', message: 'invalid, used or expired token' });
});

t.test('POST bodies are validated strictly, and nothing is used on a refusal', async (t) => {
  const victim = await userWithToken('strict@example.com');
  const t1 = encodeURIComponent(victim.token);
  const formCases: [string, string][] = [
    ['unknown field', `token=${t1}&extra=1`],
    ['repeated token', `token=${t1}&token=${t1}`],
    ['empty token', 'token='],
    ['no token', ''],
    ['__proto__ field', `__proto__=x&token=${t1}`],
  ];
  for (const [what, payload] of formCases) {
    const res = await app.inject({ method: 'POST', url: '/auth/verify-email', headers: { 'content-type': FORM }, payload });
    t.equal(res.statusCode, 400, `form, ${what}: 400`);
    t.match(res.headers['content-type'], /^text\/html/, `form, ${what}: a page`);
  }
  const jsonCases: [string, unknown][] = [
    ['unknown field', { token: victim.token, extra: 1 }],
    ['number token', { token: 5 }],
    ['array token', { token: [victim.token] }],
    ['empty object', {}],
  ];
  for (const [what, payload] of jsonCases) {
    const res = await app.inject({ method: 'POST', url: '/auth/verify-email', payload: payload as object });
    t.equal(res.statusCode, 400, `json, ${what}: 400`);
    t.match(res.json(), { statusCode: 400, error: 'Bad Request', message: String }, `json, ${what}: error JSON`);
  }
  const tooLong = await app.inject({
    method: 'POST',
    url: '/auth/verify-email',
    headers: { 'content-type': FORM },
    payload: `token=${'a'.repeat(5000)}`,
  });
  t.equal(tooLong.statusCode, 413, 'a body over 4 KiB is refused');
  const otherType = await app.inject({
    method: 'POST',
    url: '/auth/verify-email',
    headers: { 'content-type': 'text/plain' },
    payload: victim.token,
  });
  t.equal(otherType.statusCode, 400, 'a text/plain body is not an object');
  t.match(otherType.json(), { statusCode: 400, message: /body/ });
  t.equal((await tokenRow(victim.token)).used_at, null, 'no refused request used the token');
  t.equal(await isVerified(victim.userId), false);

  // The form parser belongs to verify-email only: a form post to /auth/signup stays a 415.
  const signupForm = await app.inject({
    method: 'POST',
    url: '/auth/signup',
    headers: { 'content-type': FORM },
    payload: 'email=a%40example.com',
  });
  t.equal(signupForm.statusCode, 415);
});

t.test('tracking: a page for browsers, JSON unchanged, one 404 page for every wrong id or token', async (t) => {
  // The key errand itself derived from LINK_SECRET.
  const key = deps.trackingKey;
  const order = await createOrder(app, { email: 'buyer@example.com', amount: 1999, currency: 'USD' });
  const pendingPage = await app.inject({
    method: 'GET',
    url: `/orders/${order.id}/tracking?token=${trackingToken(key, order.id)}`,
    headers: { accept: BROWSER_ACCEPT },
  });
  t.equal(pendingPage.statusCode, 200);
  assertPageHeaders(t, pendingPage);
  t.match(pendingPage.body, 'Waiting for payment');
  t.match(pendingPage.body, '$19.99');
  t.notMatch(pendingPage.body, 'Paid on', 'no paid date before payment');

  t.equal((await sendWebhook(app, paymentEvent(order))).statusCode, 200);
  const paid = await app.inject({
    method: 'GET',
    url: `/orders/${order.id}/tracking?token=${trackingToken(key, order.id)}`,
    headers: { accept: BROWSER_ACCEPT },
  });
  t.match(paid.body, /<h1>Your order is paid<\/h1>/);
  t.match(paid.body, /Paid on<\/dt><dd><time datetime="\d{4}-\d\d-\d\dT[^"]+">\d{1,2} \w+ \d{4} at \d\d:\d\d UTC<\/time>/);
  t.equal(paid.headers.vary, 'Accept');

  const json = await app.inject({ method: 'GET', url: `/orders/${order.id}/tracking?token=${trackingToken(key, order.id)}` });
  t.equal(json.statusCode, 200);
  t.match(json.json(), { id: order.id, status: 'paid', amount: 1999, currency: 'USD', paidAt: String });

  const other = await createOrder(app, { email: 'other@example.com' });
  const wrong = [
    `/orders/${order.id}/tracking?token=${trackingToken(key, other.id)}`,
    `/orders/${order.id}/tracking`,
    `/orders/${order.id}/tracking?token=x&token=y`,
    `/orders/not-a-uuid/tracking?token=${trackingToken(key, 'not-a-uuid')}`,
    `/orders/00000000-0000-4000-8000-000000000000/tracking?token=${trackingToken(key, '00000000-0000-4000-8000-000000000000')}`,
  ];
  const pages = await Promise.all(wrong.map((url) => app.inject({ method: 'GET', url, headers: { accept: BROWSER_ACCEPT } })));
  t.same(
    pages.map((p) => p.statusCode),
    wrong.map(() => 404),
  );
  t.equal(new Set(pages.map((p) => p.body)).size, 1, 'the same page for every wrong id or token');
  assertPageHeaders(t, pages[0]);
  t.match(pages[0].body, /<h1>Order not found<\/h1>/);
  const jsonWrong = await app.inject({ method: 'GET', url: wrong[0] });
  t.same(jsonWrong.json(), { statusCode: 404, error: 'Not Found', message: 'order not found' }, 'JSON 404 unchanged');
});

t.test('no log line carries a verification token', async (t) => {
  t.ok(tokensSeen.length >= 5);
  const leaks = errand.logs.raw.filter((line) => tokensSeen.some((token) => line.includes(token)));
  t.same(leaks, [], 'no token in any log line');
  t.notMatch(errand.logs.raw.join('\n'), /token=/, 'no query string or form body logged');
});
