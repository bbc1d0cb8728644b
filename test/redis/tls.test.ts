// rediss:// against a redis-server that speaks only TLS, with a self-signed certificate.
import t from 'tap';
import { startSmtpServer, startTestErrand, testEnv, waitFor } from '../support/helpers.js';
import { startTlsRedis } from '../support/redis-topologies.js';

const tls = await startTlsRedis(t);

t.test('rediss:// with ?ca= trusting the certificate: signup → verification email', async (t) => {
  const smtp = await startSmtpServer(t);
  const errand = await startTestErrand(
    t,
    testEnv(t, { REDIS_URL: `rediss://127.0.0.1:${tls.port}?ca=${encodeURIComponent(tls.caPath)}`, SMTP_URL: smtp.url }),
  );
  await waitFor(
    async () => (await errand.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 || undefined,
    15000,
    'ready over TLS',
  );
  const res = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'tls@example.com' } });
  t.equal(res.statusCode, 202);
  const [email] = await smtp.waitForEmails(1, 20000);
  t.same(email.to, ['tls@example.com']);
  const unpublished = await errand.deps.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute();
  t.equal(unpublished.length, 0, 'published over TLS at once');
});

t.test('the certificate is verified: without ?ca= the system store does not trust it', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { REDIS_URL: `rediss://127.0.0.1:${tls.port}`, ROLE: 'api', LOG_LEVEL: 'fatal' }));
  const ready = await errand.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 503);
  t.same(ready.json().checks, { postgres: 'ok', redis: 'unreachable' });
});

t.test('plain redis:// to the TLS port never becomes ready', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { REDIS_URL: `redis://127.0.0.1:${tls.port}`, ROLE: 'api', LOG_LEVEL: 'fatal' }));
  const ready = await errand.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 503);
  t.equal(ready.json().checks.redis, 'unreachable');
});
