import t from 'tap';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createDb } from '../../src/db/pool.js';
import { prepareDatabase } from '../../src/db/migrations.js';
import { ExportUsageError, parseExportArgs } from '../../src/batch/export-cli.js';
import { freshDatabaseUrl, runScript } from '../support/helpers.js';

t.test('argument parser', async (t) => {
  t.same(parseExportArgs([]), { help: false, params: { format: 'csv' } });
  t.same(
    parseExportArgs([
      '--from',
      '2026-01-01T00:00:00Z',
      '--to',
      '2026-02-01T00:00:00.000+01:00',
      '--status',
      'paid',
      '--format',
      'ndjson',
      '--out',
      'x.ndjson',
    ]),
    {
      help: false,
      out: 'x.ndjson',
      params: { format: 'ndjson', from: '2026-01-01T00:00:00Z', to: '2026-02-01T00:00:00.000+01:00', status: 'paid' },
    },
  );
  t.equal(parseExportArgs(['--help']).help, true);
  const bad: [string[], RegExp][] = [
    [['--from', 'yesterday'], /--from/],
    [['--to', '2026-13-01'], /--to/],
    [['--status', 'lost'], /--status/],
    [['--format', 'xml'], /--format/],
    [['--from', '2026-02-01T00:00:00Z', '--to', '2026-01-01T00:00:00Z'], /before/],
    [['--limit', '3'], /limit/],
    [['positional'], /positional/],
    [['--out', ''], /--out/],
  ];
  for (const [argv, message] of bad) {
    t.throws(() => parseExportArgs(argv), { name: 'ExportUsageError', message }, argv.join(' '));
  }
  t.ok(new ExportUsageError('x') instanceof Error);
});

t.test('npm run export writes the file and one summary line; bad arguments exit 2', async (t) => {
  const databaseUrl = freshDatabaseUrl(t);
  await prepareDatabase(databaseUrl);
  const db = createDb(databaseUrl, 1);
  t.teardown(() => db.destroy());
  await db
    .insertInto('orders')
    .values([
      {
        id: '00000000-0000-4000-8000-00000000000a',
        email: 'a,"b"@example.com',
        amount: 100,
        currency: 'EUR',
        provider_ref: 'pay_a',
        created_at: new Date('2026-01-01T00:00:00Z'),
        updated_at: new Date('2026-01-01T00:00:00Z'),
      },
      {
        id: '00000000-0000-4000-8000-00000000000b',
        email: 'b@example.com',
        amount: 200,
        currency: 'EUR',
        provider_ref: 'pay_b',
        created_at: new Date('2026-01-02T00:00:00Z'),
        updated_at: new Date('2026-01-02T00:00:00Z'),
      },
    ])
    .execute();
  const dir = await mkdtemp(path.join(tmpdir(), 'errand-export-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const out = path.join(dir, 'orders.csv');
  const env = { DATABASE_URL: databaseUrl, BATCH_CHUNK_ROWS: '1' };

  const ok = await runScript('export.ts', ['--from', '2026-01-01T00:00:00Z', '--out', out], env);
  t.equal(ok.code, 0, ok.stderr);
  t.equal(ok.stdout, '', 'nothing on stdout with --out');
  const expected =
    'id,email,amount,currency,status,providerRef,paidAt,createdAt,updatedAt\r\n' +
    '00000000-0000-4000-8000-00000000000a,"a,""b""@example.com",100,EUR,pending,pay_a,,2026-01-01T00:00:00.000Z,2026-01-01T00:00:00.000Z\r\n' +
    '00000000-0000-4000-8000-00000000000b,b@example.com,200,EUR,pending,pay_b,,2026-01-02T00:00:00.000Z,2026-01-02T00:00:00.000Z\r\n';
  t.equal(await readFile(out, 'utf8'), expected);
  t.same(await readdir(dir), ['orders.csv'], 'no partial file left');
  const lines = ok.stderr.trim().split('\n');
  t.equal(lines.length, 1, 'stderr is not a terminal: no bar, one line');
  const summary = JSON.parse(lines[0]) as { rows: number; bytes: number; durationMs: number };
  t.match(summary, { rows: 2, bytes: Buffer.byteLength(expected), durationMs: Number });

  const bad = await runScript('export.ts', ['--format', 'xml'], env);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--format[\s\S]*usage: npm run export/);
});
