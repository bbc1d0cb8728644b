import t from 'tap';
import { startTestErrand, testEnv, waitFor, type TestErrand } from '../support/helpers.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789';
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

async function insertOrder(
  errand: TestErrand,
  order: { id: string; email: string; ref: string; status: 'pending' | 'paid'; createdAt: string; paidAt?: string; amount?: number },
) {
  await errand.deps.db
    .insertInto('orders')
    .values({
      id: order.id,
      email: order.email,
      amount: order.amount ?? 1999,
      currency: 'USD',
      status: order.status,
      provider_ref: order.ref,
      paid_at: order.paidAt ? new Date(order.paidAt) : null,
      created_at: new Date(order.createdAt),
      updated_at: new Date(order.paidAt ?? order.createdAt),
    })
    .execute();
}

async function waitForJob(errand: TestErrand, jobId: string, state: 'completed' | 'failed') {
  return waitFor(
    async () => {
      const res = await errand.app.inject({ method: 'GET', url: `/admin/jobs/batch/${jobId}`, headers: bearer });
      const body = res.json<{ state: string }>();
      return body.state === state ? body : undefined;
    },
    30000,
    `job ${jobId} ${state}`,
  );
}

t.test('orders export: CSV and NDJSON content, file download, job view, SSE', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'all', ADMIN_TOKEN, BATCH_CHUNK_ROWS: '2', BATCH_CHUNK_PAUSE_MS: '100' }));
  const { app } = errand;

  const ids = [
    '00000000-0000-4000-8000-000000000001',
    '00000000-0000-4000-8000-000000000002',
    '00000000-0000-4000-8000-000000000003',
    '00000000-0000-4000-8000-000000000004',
  ];
  await insertOrder(errand, {
    id: ids[0],
    email: 'plain@example.com',
    ref: 'pay_1',
    status: 'paid',
    createdAt: '2026-01-01T00:00:00.000Z',
    paidAt: '2026-01-01T00:05:00.250Z',
  });
  await insertOrder(errand, {
    id: ids[1],
    email: 'comma,quote"d@example.com',
    ref: 'pay_"2"',
    status: 'pending',
    createdAt: '2026-01-02T00:00:00.000Z',
  });
  await insertOrder(errand, {
    id: ids[2],
    email: 'line\nbreak@example.com',
    ref: 'pay_3\r\nnext',
    status: 'paid',
    createdAt: '2026-01-02T00:00:00.000Z',
    paidAt: '2026-01-03T00:00:00.000Z',
    amount: 5,
  });
  await insertOrder(errand, {
    id: ids[3],
    email: 'late@example.com',
    ref: 'pay_4',
    status: 'pending',
    createdAt: '2026-02-01T00:00:00.000Z',
  });

  t.test('CSV: RFC 4180 quoting, header, from/to range, created_at then id order', async (t) => {
    const res = await app.inject({
      method: 'POST',
      url: '/admin/exports/orders',
      headers: bearer,
      payload: { from: '2026-01-01T00:00:00Z', to: '2026-01-31T00:00:00Z' },
    });
    t.equal(res.statusCode, 202);
    const { jobId } = res.json<{ jobId: string }>();
    const done = await waitForJob(errand, jobId, 'completed');
    t.match(done, {
      id: jobId,
      name: 'orders-export',
      state: 'completed',
      result: { rows: 3, format: 'csv' },
      progress: { done: 3, total: 3 },
      failedReason: null,
    });
    t.notOk('data' in done, 'job view never shows the job data');

    const file = await app.inject({ method: 'GET', url: `/admin/exports/${jobId}/file`, headers: bearer });
    t.equal(file.statusCode, 200);
    t.match(file.headers['content-type'], /^text\/csv/);
    t.equal(file.headers['content-disposition'], `attachment; filename="orders-${jobId}.csv"`);
    const expected =
      'id,email,amount,currency,status,providerRef,paidAt,createdAt,updatedAt\r\n' +
      `${ids[0]},plain@example.com,1999,USD,paid,pay_1,2026-01-01T00:05:00.250Z,2026-01-01T00:00:00.000Z,2026-01-01T00:05:00.250Z\r\n` +
      `${ids[1]},"comma,quote""d@example.com",1999,USD,pending,"pay_""2""",,2026-01-02T00:00:00.000Z,2026-01-02T00:00:00.000Z\r\n` +
      `${ids[2]},"line\nbreak@example.com",5,USD,paid,"pay_3\r\nnext",2026-01-03T00:00:00.000Z,2026-01-02T00:00:00.000Z,2026-01-03T00:00:00.000Z\r\n`;
    t.equal(file.body, expected);
    t.equal(Number(file.headers['content-length']), Buffer.byteLength(expected));
    t.equal((done as unknown as { result: { bytes: number } }).result.bytes, Buffer.byteLength(expected));
  });

  t.test('NDJSON with a status filter', async (t) => {
    const res = await app.inject({
      method: 'POST',
      url: '/admin/exports/orders',
      headers: bearer,
      payload: { status: 'paid', format: 'ndjson' },
    });
    const { jobId } = res.json<{ jobId: string }>();
    await waitForJob(errand, jobId, 'completed');
    const file = await app.inject({ method: 'GET', url: `/admin/exports/${jobId}/file`, headers: bearer });
    t.match(file.headers['content-type'], /^application\/x-ndjson/);
    const lines = file.body.split('\n');
    t.equal(lines.pop(), '', 'ends with a newline');
    t.same(
      lines.map((line) => JSON.parse(line)),
      [
        {
          id: ids[0],
          email: 'plain@example.com',
          amount: 1999,
          currency: 'USD',
          status: 'paid',
          providerRef: 'pay_1',
          paidAt: '2026-01-01T00:05:00.250Z',
          createdAt: '2026-01-01T00:00:00.000Z',
          updatedAt: '2026-01-01T00:05:00.250Z',
        },
        {
          id: ids[2],
          email: 'line\nbreak@example.com',
          amount: 5,
          currency: 'USD',
          status: 'paid',
          providerRef: 'pay_3\r\nnext',
          paidAt: '2026-01-03T00:00:00.000Z',
          createdAt: '2026-01-02T00:00:00.000Z',
          updatedAt: '2026-01-03T00:00:00.000Z',
        },
      ],
    );
  });

  t.test('bad input and unknown ids', async (t) => {
    for (const payload of [
      { format: 'xml' },
      { from: 'yesterday' },
      { status: 'lost' },
      { extra: 1 },
      { from: '2026-02-01T00:00:00Z', to: '2026-01-01T00:00:00Z' },
    ]) {
      const res = await app.inject({ method: 'POST', url: '/admin/exports/orders', headers: bearer, payload });
      t.equal(res.statusCode, 400, JSON.stringify(payload));
    }
    t.equal((await app.inject({ method: 'POST', url: '/admin/exports/orders', payload: {} })).statusCode, 401);
    t.equal((await app.inject({ method: 'GET', url: '/admin/exports/outbox-999999/file', headers: bearer })).statusCode, 404);
    t.equal((await app.inject({ method: 'GET', url: '/admin/jobs/batch/outbox-999999', headers: bearer })).statusCode, 404);
    t.equal((await app.inject({ method: 'GET', url: '/admin/jobs/nope/1', headers: bearer })).statusCode, 404);
    t.equal((await app.inject({ method: 'GET', url: '/admin/jobs/batch/outbox-999999/events', headers: bearer })).statusCode, 404);
    t.equal((await app.inject({ method: 'POST', url: '/admin/jobs/batch/outbox-999999/cancel', headers: bearer })).statusCode, 404);
  });

  t.test('a finished job cannot be cancelled (409); an unfinished export has no file (404)', async (t) => {
    const res = await app.inject({ method: 'POST', url: '/admin/exports/orders', headers: bearer, payload: {} });
    const { jobId } = res.json<{ jobId: string }>();
    await waitForJob(errand, jobId, 'completed');
    t.equal((await app.inject({ method: 'POST', url: `/admin/jobs/batch/${jobId}/cancel`, headers: bearer })).statusCode, 409);
  });

  t.test('SSE: current state, increasing progress, then completed', async (t) => {
    // More rows and a pause per chunk, so the stream sees the job run.
    for (let i = 0; i < 10; i += 1) {
      await insertOrder(errand, {
        id: `00000000-0000-4000-9000-${String(i).padStart(12, '0')}`,
        email: `sse${i}@example.com`,
        ref: `pay_sse_${i}`,
        status: 'pending',
        createdAt: '2026-03-01T00:00:00.000Z',
      });
    }
    await errand.app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(errand.app.server.address() as { port: number }).port}`;
    const { jobId } = (await (
      await fetch(`${base}/admin/exports/orders`, {
        method: 'POST',
        headers: { ...bearer, 'content-type': 'application/json' },
        body: JSON.stringify({ from: '2026-03-01T00:00:00Z' }),
      })
    ).json()) as { jobId: string };
    const res = await fetch(`${base}/admin/jobs/batch/${jobId}/events`, { headers: bearer });
    t.equal(res.status, 200);
    t.match(res.headers.get('content-type'), /^text\/event-stream/);
    const text = await res.text(); // the server ends the stream when the job ends
    const events = text
      .split('\n\n')
      .filter((block) => block.startsWith('event:'))
      .map((block) => {
        const [eventLine, dataLine] = block.split('\n');
        return { event: eventLine.slice('event: '.length), data: JSON.parse(dataLine.slice('data: '.length)) as Record<string, unknown> };
      });
    t.equal(events[0]?.event, 'state', 'current state first');
    t.equal(events.at(-1)?.event, 'completed', 'ends with completed');
    t.match(events.at(-1)?.data, { id: jobId, result: { rows: 10 } });
    const progress = events.filter((e) => e.event === 'progress').map((e) => e.data.done as number);
    t.ok(progress.length >= 2, `several progress events (${progress.join(',')})`);
    t.same(
      progress,
      [...progress].sort((a, b) => a - b),
      'progress only increases',
    );
    t.equal(progress.at(-1), 10);
  });
});
