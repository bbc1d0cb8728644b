// Scenario: the `orders-export` job over BENCH_EXPORT_ORDERS orders (default 1,000,000) in an `all`-role
// errand: rows/s and MB/s of the job, peak RSS of the process (sampled every 100 ms) and its growth over
// the RSS before the job, then the download of the finished file (MB/s). Smoke run: BENCH_EXPORT_ORDERS=5000.
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import { createDb } from '../src/db/pool.js';
import { prepareDatabase } from '../src/db/migrations.js';
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

const ORDERS = Number(process.env.BENCH_EXPORT_ORDERS ?? 1_000_000);
const FORMATS = (process.env.BENCH_EXPORT_FORMATS ?? 'csv,ndjson').split(',') as ('csv' | 'ndjson')[];
// Unset: errand's own BATCH_CHUNK_ROWS default.
const CHUNK_ROWS = process.env.BENCH_EXPORT_CHUNK_ROWS;
const ADMIN_TOKEN = 'bench-admin-token-0123456789abcdef0123456789';
const headers = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };

await runScenario('export', async () => {
  const machine = await machineInfo();
  const databaseUrl = freshDatabaseUrl();
  await prepareDatabase(databaseUrl);
  progress(`inserting ${ORDERS} orders`);
  const db = createDb(databaseUrl, 1);
  const seedStarted = performance.now();
  // One set-based statement: PostgreSQL generates every row itself (seconds for a million, where row batches
  // sent from here took minutes). Some fields need CSV quoting, as real data would.
  await sql`
    INSERT INTO orders (email, amount, currency, status, provider_ref, paid_at, created_at, updated_at)
    SELECT CASE WHEN i % 10 = 0 THEN 'quoted,"buyer"' || i || '@example.com' ELSE 'buyer' || i || '@example.com' END,
           100 + i % 5000, 'EUR', (ARRAY['pending','paid','failed','expired'])[1 + i % 4], 'pay_' || i,
           CASE WHEN i % 4 = 1 THEN timestamptz '2026-01-01' + i * interval '1 second' END,
           timestamptz '2026-01-01' + i * interval '1 second',
           timestamptz '2026-01-01' + i * interval '1 second'
      FROM generate_series(1, ${ORDERS}::int) AS i`.execute(db);
  await sql`ANALYZE orders`.execute(db);
  await db.destroy();
  const seedSeconds = round((performance.now() - seedStarted) / 1000, 1);
  progress(`seeded in ${seedSeconds} s`);

  const env = errandEnv({
    PORT: String(await freePort()),
    DATABASE_URL: databaseUrl,
    QUEUE_PREFIX: freshQueuePrefix(),
    ADMIN_TOKEN,
    MAIL_DIR: '/tmp/errand-bench-mail',
    ...(CHUNK_ROWS ? { BATCH_CHUNK_ROWS: CHUNK_ROWS } : {}),
  });
  const server = await spawnServer('src/main.ts', env);
  const rows: Record<string, unknown>[] = [];
  for (const format of FORMATS) {
    await sleep(500);
    const rssBefore = server.rssMb();
    let peak = rssBefore;
    const sampler = setInterval(() => (peak = Math.max(peak, server.rssMb())), 100);
    const started = performance.now();
    const { jobId } = (await (
      await fetch(`${server.url}/admin/exports/orders`, { method: 'POST', headers, body: JSON.stringify({ format }) })
    ).json()) as { jobId: string };
    let view: { state: string; result: { rows: number; bytes: number } | null; failedReason: string | null };
    for (;;) {
      view = (await (await fetch(`${server.url}/admin/jobs/batch/${jobId}`, { headers })).json()) as typeof view;
      if (view.state === 'completed' || view.state === 'failed') break;
      await sleep(100);
    }
    const jobMs = performance.now() - started;
    clearInterval(sampler);
    if (view.state !== 'completed' || !view.result) throw new Error(`export failed: ${view.failedReason}`);
    progress(`${format}: ${view.result.rows} rows, ${round(view.result.bytes / 2 ** 20)} MB in ${round(jobMs / 1000, 2)} s`);

    const rssBeforeDownload = server.rssMb();
    let downloadPeak = rssBeforeDownload;
    const downloadSampler = setInterval(() => (downloadPeak = Math.max(downloadPeak, server.rssMb())), 100);
    const downloadStarted = performance.now();
    const response = await fetch(`${server.url}/admin/exports/${jobId}/file`, { headers });
    let downloaded = 0;
    for await (const chunk of response.body!) downloaded += (chunk as Uint8Array).length;
    const downloadMs = performance.now() - downloadStarted;
    clearInterval(downloadSampler);
    if (downloaded !== view.result.bytes) throw new Error(`downloaded ${downloaded} bytes of ${view.result.bytes}`);
    rows.push({
      format,
      rows: view.result.rows,
      mb: round(view.result.bytes / 2 ** 20),
      'job s': round(jobMs / 1000, 2),
      'rows/s': Math.round(view.result.rows / (jobMs / 1000)),
      'MB/s': round(view.result.bytes / 2 ** 20 / (jobMs / 1000)),
      'rss before MB': round(rssBefore),
      'peak rss MB': round(peak),
      'rss growth MB': round(peak - rssBefore),
      'download MB/s': round(downloaded / 2 ** 20 / (downloadMs / 1000)),
      'download rss growth MB': round(downloadPeak - rssBeforeDownload),
    });
  }
  report('export', machine, { orders: ORDERS, seedSeconds, chunkRows: CHUNK_ROWS ?? 'BATCH_CHUNK_ROWS default', runs: rows }, rows);
});
