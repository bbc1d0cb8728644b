import t from 'tap';
import { extractLink, startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

t.test('job lifecycle lines carry the contract fields; no line leaks an address, token or link', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: smtp.url, LOG_LEVEL: 'trace' }));
  const address = 'secret.person@example.org';

  const res = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: address, name: 'Secret' } });
  t.equal(res.statusCode, 202);
  const [email] = await smtp.waitForEmails(1);
  const link = extractLink(email!.text, '/auth/verify-email?token=');
  const token = new URL(link).searchParams.get('token')!;
  const url = new URL(link);
  t.equal((await errand.app.inject({ method: 'GET', url: `${url.pathname}${url.search}` })).statusCode, 200);
  t.equal((await errand.app.inject({ method: 'GET', url: `${url.pathname}${url.search}` })).statusCode, 400);
  // A link mangled into an unknown route: the 404 must not log the token either.
  t.equal((await errand.app.inject({ method: 'GET', url: `${url.pathname}/extra${url.search}` })).statusCode, 404);
  // QueueEvents lines arrive on their own connection, after the email: wait for the last one.
  await waitFor(() => errand.logs.lines().some((l) => l.event === 'completed') || undefined, 10000, 'the completed line');

  const raw = errand.logs.raw;
  const lines = errand.logs.lines();
  t.ok(lines.length > 5, `captured ${lines.length} lines`);

  for (const line of raw) {
    t.notOk(line.toLowerCase().includes(address), 'no full email address');
    t.notOk(line.includes(token), 'no token');
    t.notOk(line.includes('verify-email?'), 'no verification link');
  }
  t.ok(lines.some((l) => l.recipient === 's***@example.org'), 'the masked address is logged instead');

  // The email queue's lines (the maintenance scheduler adds its own job at start).
  const jobLines = lines.filter((l) => typeof l.event === 'string' && l.queue === 'email');
  const events = new Set(jobLines.map((l) => l.event));
  for (const event of ['added', 'waiting', 'active', 'completed']) t.ok(events.has(event), `saw ${event}`);
  for (const line of jobLines) {
    t.match(line, { queue: 'email', jobId: /^outbox-\d+$/, jobName: 'email-verification', attempt: Number, event: String }, `${line.event} line has the fields`);
  }

  const perEvent = new Map<string, number>();
  for (const line of jobLines) perEvent.set(`${line.jobId}/${line.event}/${line.attempt}`, (perEvent.get(`${line.jobId}/${line.event}/${line.attempt}`) ?? 0) + 1);
  for (const [key, count] of perEvent) t.equal(count, 1, `one line for ${key}`);

  const httpLines = lines.filter((l) => l.req || l.res);
  t.equal(httpLines.length, 4, 'one access line per request');
  for (const line of httpLines) {
    t.match(line, { reqId: /\S/, req: { method: String, url: String }, res: { statusCode: Number }, responseTime: Number }, 'HTTP lines carry reqId, method, url, status and duration');
  }
  t.match(httpLines[0], { msg: 'signup accepted', recipient: 's***@example.org', emailQueued: true }, "the route's outcome rides on its access line");
  t.match(httpLines.map((l) => l.route), ['/auth/signup', '/auth/verify-email', '/auth/verify-email', null], 'the route pattern, null when none matched');
});
