import t from 'tap';
import { createServer } from 'node:http';
import { createHttpPaymentProvider } from '../../src/reconcile/provider.js';
import { createSimulatorClient, ProviderSimulator } from '../../src/reconcile/simulator.js';
import { freePort } from '../support/helpers.js';
import { startSimulator } from '../support/reconcile.js';

const { sim, url } = await startSimulator(t);
const provider = createHttpPaymentProvider({ baseUrl: `${url}/`, timeoutMs: 300 });

t.beforeEach(() => sim.reset());

// Plain objects for tap's comparisons (its types trip over the discriminated union).
const plain = async (lookup: Promise<unknown>): Promise<Record<string, unknown>> => ({ ...((await lookup) as object) });

t.test('200 is found, with the provider status, amount and currency', async (t) => {
  sim.setPayment('pay_a', { status: 'succeeded', amount: 1999, currency: 'USD' });
  t.same(await plain(provider.getPayment('pay_a')), { kind: 'found', status: 'succeeded', amount: 1999, currency: 'USD' });
  for (const status of ['pending', 'failed', 'expired'] as const) {
    sim.setPayment('pay_b', { status, amount: 5, currency: 'EUR' });
    t.same(await plain(provider.getPayment('pay_b')), { kind: 'found', status, amount: 5, currency: 'EUR' });
  }
});

t.test('404 is unknown', async (t) => {
  t.same(await plain(provider.getPayment('pay_nobody')), { kind: 'unknown' });
});

t.test('429, 500, 503, a timeout and a closed port are transient', async (t) => {
  sim.setPayment('pay_a', { status: 'succeeded', amount: 1, currency: 'USD' });
  for (const failWith of [429, 500, 503] as const) {
    sim.failReference('pay_a', failWith);
    t.same(await plain(provider.getPayment('pay_a')), { kind: 'transient', reason: `http ${failWith}` });
  }
  sim.failReference('pay_a', 'timeout');
  const started = Date.now();
  t.same(await plain(provider.getPayment('pay_a')), { kind: 'transient', reason: 'timeout' });
  t.ok(Date.now() - started < 5000, 'gave up after about the timeout');

  sim.failReference('pay_a', null);
  sim.configure({ latencyMs: 1000 });
  t.match(await plain(provider.getPayment('pay_a')), { kind: 'transient', reason: 'timeout' }, 'slow answers time out too');

  const closed = createHttpPaymentProvider({ baseUrl: `http://127.0.0.1:${await freePort()}`, timeoutMs: 1000 });
  t.match(await plain(closed.getPayment('pay_a')), { kind: 'transient', reason: /^network: / });
});

t.test('failRate applies to every reference', async (t) => {
  sim.setPayment('pay_a', { status: 'failed', amount: 1, currency: 'USD' });
  sim.configure({ failRate: 1, failWith: 429 });
  t.same(await plain(provider.getPayment('pay_a')), { kind: 'transient', reason: 'http 429' });
  t.same(await plain(provider.getPayment('pay_unknown')), { kind: 'transient', reason: 'http 429' });
});

t.test('a body that breaks the contract, or another 4xx, is invalid (not found, not transient)', async (t) => {
  const bodies: Array<[number, string]> = [
    [200, '{"providerRef":"pay_x","status":"refunded","amount":1,"currency":"USD"}'],
    [200, '{"providerRef":"pay_x","status":"succeeded","amount":"1","currency":"USD"}'],
    [200, '{"providerRef":"pay_other","status":"succeeded","amount":1,"currency":"USD"}'],
    [200, 'not json'],
    [401, '{"error":"no"}'],
  ];
  let next = 0;
  const server = createServer((_req, res) => {
    const [status, body] = bodies[next++];
    res.writeHead(status, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  const odd = createHttpPaymentProvider({ baseUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}`, timeoutMs: 1000 });
  for (let i = 0; i < bodies.length; i++) t.match(await plain(odd.getPayment('pay_x')), { kind: 'invalid', reason: String }, bodies[i][1]);
});

t.test('extra properties in a 200 are tolerated', async (t) => {
  const server = createServer((_req, res) =>
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end('{"providerRef":"pay_x","status":"expired","amount":7,"currency":"GBP","method":"card"}'),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  const extra = createHttpPaymentProvider({ baseUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}`, timeoutMs: 1000 });
  t.same(await plain(extra.getPayment('pay_x')), { kind: 'found', status: 'expired', amount: 7, currency: 'GBP' });
});

t.test('the control API sets payments, failures and config, and refuses bad input', async (t) => {
  const put = (path: string, body: unknown) => fetch(`${url}${path}`, { method: 'PUT', body: JSON.stringify(body) });
  t.equal((await put('/_sim/payments/pay_c', { status: 'succeeded', amount: 10, currency: 'USD' })).status, 200);
  t.same(await plain(provider.getPayment('pay_c')), { kind: 'found', status: 'succeeded', amount: 10, currency: 'USD' });
  t.equal((await put('/_sim/payments/pay_c', { status: 'paid', amount: 10, currency: 'USD' })).status, 400, 'provider statuses only');
  t.equal((await put('/_sim/payments/pay_c', { status: 'failed', amount: 10, currency: 'USD', extra: 1 })).status, 400);

  t.equal((await put('/_sim/failures/pay_c', { failWith: 'timeout' })).status, 200);
  t.match(await plain(provider.getPayment('pay_c')), { kind: 'transient', reason: 'timeout' });
  t.equal((await put('/_sim/failures/pay_c', { failWith: null })).status, 200);
  t.match(await plain(provider.getPayment('pay_c')), { kind: 'found' });

  t.equal((await put('/_sim/config', { failRate: 2 })).status, 400);
  const config = await put('/_sim/config', { latencyMs: 5, failRate: 0, failWith: 503 });
  t.same(await config.json(), { latencyMs: 5, failRate: 0, failWith: 503 });
  const stats = await (await fetch(`${url}/_sim/stats`)).json();
  t.match(stats, { requests: Number, payments: 1 });
  t.equal((await fetch(`${url}/_sim/reset`, { method: 'POST' })).status, 200);
  t.same(await plain(provider.getPayment('pay_c')), { kind: 'unknown' });
});

t.test('the in-memory client classifies like the HTTP client', async (t) => {
  const memory = new ProviderSimulator();
  const client = createSimulatorClient(memory, { timeoutMs: 200 });
  t.same(await plain(client.getPayment('pay_m')), { kind: 'unknown' });
  memory.setPayment('pay_m', { status: 'pending', amount: 3, currency: 'USD' });
  t.same(await plain(client.getPayment('pay_m')), { kind: 'found', status: 'pending', amount: 3, currency: 'USD' });
  memory.failReference('pay_m', 500);
  t.same(await plain(client.getPayment('pay_m')), { kind: 'transient', reason: 'http 500' });
  memory.failReference('pay_m', 'timeout');
  t.same(await plain(client.getPayment('pay_m')), { kind: 'transient', reason: 'timeout' });
});
