// Scenario: `POST /admin/imports/users?sendVerification=false` with BENCH_IMPORT_ROWS rows (default 100,000)
// into an `all`-role errand: upload time (stored in PostgreSQL before the 202), job rows/s, peak RSS.
// Smoke run: BENCH_IMPORT_ROWS=2000.
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import {
  errandEnv,
  freePort,
  freshDatabaseUrl,
  freshQueuePrefix,
  machineInfo,
  progress,
  report,
  round,
  runScenario,
  sleep,
  spawnServer,
} from './lib.js';

const ROWS = Number(process.env.BENCH_IMPORT_ROWS ?? 100_000);
const ADMIN_TOKEN = 'bench-admin-token-0123456789abcdef0123456789';

await runScenario('import', async () => {
  const machine = await machineInfo();
  const env = errandEnv({
    PORT: String(await freePort()),
    DATABASE_URL: freshDatabaseUrl(),
    QUEUE_PREFIX: freshQueuePrefix(),
    ADMIN_TOKEN,
    MAIL_DIR: '/tmp/errand-bench-mail',
  });
  const server = await spawnServer('src/main.ts', env);
  const run = randomBytes(3).toString('hex');
  // 1 % invalid addresses and 1 % repeats, as a real list would have.
  const lines = ['email,name'];
  for (let i = 0; i < ROWS; i += 1) {
    if (i % 100 === 7) lines.push(`not-an-address-${i},Bad ${i}`);
    else if (i % 100 === 8) lines.push(`user${i - 2}-${run}@example.com,Repeat ${i}`);
    else lines.push(`user${i}-${run}@example.com,"User ${i}, imported"`);
  }
  const body = `${lines.join('\n')}\n`;
  progress(`uploading ${ROWS} rows (${round(Buffer.byteLength(body) / 2 ** 20)} MB)`);

  await sleep(500);
  const rssBefore = server.rssMb();
  let peak = rssBefore;
  const sampler = setInterval(() => (peak = Math.max(peak, server.rssMb())), 100);
  const started = performance.now();
  const res = await fetch(`${server.url}/admin/imports/users?sendVerification=false`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'text/csv' },
    body,
  });
  const uploadMs = performance.now() - started;
  if (res.status !== 202) throw new Error(`upload answered ${res.status}: ${await res.text()}`);
  const { jobId } = (await res.json()) as { jobId: string };
  let view: { state: string; result: Record<string, number> | null; failedReason: string | null };
  for (;;) {
    view = (await (
      await fetch(`${server.url}/admin/jobs/batch/${jobId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    ).json()) as typeof view;
    if (view.state === 'completed' || view.state === 'failed') break;
    await sleep(100);
  }
  const totalMs = performance.now() - started;
  clearInterval(sampler);
  if (view.state !== 'completed' || !view.result) throw new Error(`import failed: ${view.failedReason}`);
  const row = {
    rows: view.result.rows,
    created: view.result.created,
    existing: view.result.existing,
    invalid: view.result.invalid,
    'upload s': round(uploadMs / 1000, 2),
    'total s': round(totalMs / 1000, 2),
    'rows/s (upload + job)': Math.round(ROWS / (totalMs / 1000)),
    'rss before MB': round(rssBefore),
    'peak rss MB': round(peak),
  };
  report('import', machine, { rows: ROWS, run: row }, [row]);
});
