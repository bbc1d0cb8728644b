// Scenario 5: runPaymentsSweep over 200 and 2,000 pending orders against the provider simulator
// (its own process, 20 ms per lookup), at concurrency 1 and at the default (4).
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config.js';
import { createDeps } from '../src/deps.js';
import { prepareDatabase } from '../src/db/migrations.js';
import { runPaymentsSweep, type SweepSummary } from '../src/reconcile/sweep.js';
import {
  errandEnv,
  freePort,
  freshDatabaseUrl,
  freshQueuePrefix,
  machineInfo,
  nullStream,
  onCleanup,
  progress,
  report,
  round,
  runScenario,
  spawnServer,
} from './lib.js';

const SIZES = (process.env.BENCH_SWEEP_SIZES ?? '200,2000').split(',').map(Number);
const CONCURRENCIES = [1, 4];
const LATENCY_MS = 20;
const AMOUNT = 1999;
const CURRENCY = 'USD';
/** What the provider says, by order index: 70 % succeeded, 10 % each failed / expired / still pending. */
const MIX = [
  'succeeded',
  'succeeded',
  'succeeded',
  'succeeded',
  'succeeded',
  'succeeded',
  'succeeded',
  'failed',
  'expired',
  'pending',
] as const;

async function put(url: string, body: unknown): Promise<void> {
  const response = await fetch(url, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  await response.arrayBuffer();
  if (response.status !== 200) throw new Error(`PUT ${url} answered ${response.status}`);
}

await runScenario('sweep', async () => {
  const machine = await machineInfo();
  const env = errandEnv({ DATABASE_URL: freshDatabaseUrl(), QUEUE_PREFIX: freshQueuePrefix(), LOG_LEVEL: 'warn' });

  progress('starting the provider simulator (scripts/provider-sim.ts)');
  const sim = await spawnServer(
    'scripts/provider-sim.ts',
    { PORT: String(await freePort()), HOST: '127.0.0.1' },
    { readyPath: '/_sim/stats' },
  );
  await put(`${sim.url}/_sim/config`, { latencyMs: LATENCY_MS, failRate: 0 });

  const config = loadConfig({ ...env, PAYMENT_PROVIDER_URL: sim.url });
  await prepareDatabase(config.DATABASE_URL);
  const deps = createDeps(config, { logDestination: nullStream() });
  onCleanup('close sweep deps', () => deps.close());
  await new Promise<void>((resolve) => (deps.redis.status === 'ready' ? resolve() : deps.redis.once('ready', () => resolve())));

  const runs: Array<Record<string, unknown>> = [];
  for (const size of SIZES) {
    for (const concurrency of CONCURRENCIES) {
      // A clean slate: the previous run's still-pending orders would otherwise be swept again.
      await deps.db.deleteFrom('orders').where('status', '=', 'pending').execute();
      const values = Array.from({ length: size }, () => ({
        email: `buyer-${randomBytes(6).toString('hex')}@example.com`,
        amount: AMOUNT,
        currency: CURRENCY,
        provider_ref: `pay_${randomBytes(8).toString('hex')}`,
      }));
      for (let i = 0; i < values.length; i += 1000)
        await deps.db
          .insertInto('orders')
          .values(values.slice(i, i + 1000))
          .execute();
      const refs = values.map((v, i) => ({ ref: v.provider_ref, status: MIX[i % MIX.length] }));
      for (let i = 0; i < refs.length; i += 50) {
        await Promise.all(
          refs
            .slice(i, i + 50)
            .map(({ ref, status }) => put(`${sim.url}/_sim/payments/${ref}`, { status, amount: AMOUNT, currency: CURRENCY })),
        );
      }

      progress(`sweep: ${size} pending orders, concurrency ${concurrency}, provider latency ${LATENCY_MS} ms`);
      const t0 = performance.now();
      const summary: SweepSummary = await runPaymentsSweep(
        { windowHours: 24, limit: size },
        { ...deps, config: { PAYMENTS_RECONCILE_CONCURRENCY: concurrency } },
      );
      const wallMs = performance.now() - t0;
      // The provider's latency alone, perfectly overlapped: the floor no sweep at this concurrency can beat.
      const latencyBoundMs = (size * LATENCY_MS) / concurrency;
      runs.push({
        orders: size,
        concurrency,
        wallS: round(wallMs / 1000, 2),
        ordersPerS: round(size / (wallMs / 1000), 1),
        msPerOrder: round(wallMs / size, 2),
        // Time one order occupies a lane, minus the provider's 20 ms: errand's own cost per order.
        overheadMsPerOrder: round((wallMs * concurrency) / size - LATENCY_MS, 2),
        latencyBoundS: round(latencyBoundMs / 1000, 2),
        efficiency: round(latencyBoundMs / wallMs, 3),
        checked: summary.checked,
        paid: summary.paid,
        failed: summary.failed,
        expired: summary.expired,
        unchanged: summary.unchanged,
        errors: summary.errors,
      });
      progress(`  ${JSON.stringify(runs.at(-1))}`);
    }
  }
  await deps.close();
  await sim.stop();

  const speedup = Object.fromEntries(
    SIZES.map((size) => {
      const one = runs.find((r) => r.orders === size && r.concurrency === 1)!;
      const four = runs.find((r) => r.orders === size && r.concurrency === 4)!;
      return [String(size), round((one.wallS as number) / (four.wallS as number), 2)];
    }),
  );
  const targets = { everyOrderChecked: runs.every((r) => r.checked === r.orders), noErrors: runs.every((r) => r.errors === 0) };
  report('sweep', machine, { latencyMs: LATENCY_MS, runs, speedup4vs1: speedup, targets }, [
    ...runs,
    ...SIZES.map((size) => ({ orders: size, concurrency: '4 vs 1', wallS: `${speedup[String(size)]}× faster` })),
  ]);
});
