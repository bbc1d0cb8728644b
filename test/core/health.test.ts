import t from 'tap';
import { once } from 'node:events';
import { connect, type AddressInfo, type Socket } from 'node:net';
import pg from 'pg';
import { loadConfig } from '../../src/config.js';
import { createDeps } from '../../src/deps.js';
import { buildApp } from '../../src/app.js';
import { EMAIL_QUEUE } from '../../src/queues.js';
import { waitUntilConnected } from '../../src/core/redis.js';
import { captureLogs, freePort, REDIS_URL, startTestErrand, testEnv, uniqueName, waitFor } from '../support/helpers.js';

t.test('healthz and readyz with PostgreSQL and Redis up', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
  const health = await errand.app.inject({ method: 'GET', url: '/healthz' });
  t.equal(health.statusCode, 200);
  t.same(health.json(), { status: 'ok' });
  const ready = await errand.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 200);
  t.same(ready.json(), { status: 'ready', checks: { postgres: 'ok', redis: 'ok' } });
});

t.test('with PostgreSQL unreachable: readyz 503 naming it, signup 503 and nothing queued', async (t) => {
  const port = await freePort();
  const prefix = uniqueName('t');
  const config = loadConfig({
    DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere`,
    REDIS_URL,
    QUEUE_PREFIX: prefix,
    ROLE: 'api',
    LOG_LEVEL: 'fatal',
  });
  const deps = createDeps(config, { logDestination: captureLogs().stream });
  const app = await buildApp(deps);
  t.ok(await waitUntilConnected(deps.redis, 5000), 'redis connected');
  t.teardown(async () => {
    await app.close();
    await deps.queues[EMAIL_QUEUE].obliterate({ force: true });
    await deps.close();
  });

  const ready = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 503);
  t.equal(ready.json().checks.redis, 'ok');
  t.equal(ready.json().checks.postgres, 'unreachable');

  const signup = await app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'a@example.com' } });
  t.equal(signup.statusCode, 503);
  t.match(signup.json(), { statusCode: 503, error: 'Service Unavailable' });
  const counts = await deps.queues[EMAIL_QUEUE].getJobCounts();
  t.equal(
    Object.values(counts).reduce((a, b) => a + b, 0),
    0,
    'nothing queued',
  );
});

t.test('with Redis unreachable: readyz 503 naming it', async (t) => {
  const port = await freePort();
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', REDIS_URL: `redis://127.0.0.1:${port}`, LOG_LEVEL: 'fatal' }));
  const ready = await errand.app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 503);
  t.equal(ready.json().checks.postgres, 'ok');
  t.equal(ready.json().checks.redis, 'unreachable');
  // And signups still succeed: the outbox keeps the job.
  const signup = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'a@example.com' } });
  t.equal(signup.statusCode, 202);
});

/** A connection that has sent a request line and some headers but not the blank line ending them: busy, not idle. */
async function startRequest(port: number, head: string): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  socket.write(head);
  return socket;
}

/** Sends the rest of the request and reads the raw answer until the server ends the connection (a hang fails the wait). */
async function finishRequest(socket: Socket, rest: string): Promise<{ raw: string; error?: Error }> {
  let raw = '';
  let error: Error | undefined;
  socket.on('data', (chunk: Buffer) => (raw += chunk.toString()));
  socket.on('error', (err) => (error = err));
  const ended = once(socket, 'close');
  socket.write(rest);
  await waitFor(() => socket.closed || undefined, 10000, 'the server to answer and close the connection');
  await ended;
  return { raw, error };
}

t.test('during shutdown: a request arriving on an open connection gets 503 (readyz too), a new connection is refused', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { LOG_LEVEL: 'info' }));
  await errand.app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = errand.app.server.address() as AddressInfo;
  // Clients mid-request when the stop begins (a load balancer has not taken errand out yet).
  const probe = await startRequest(port, 'GET /readyz HTTP/1.1\r\nHost: errand.test\r\n');
  const body = JSON.stringify({ email: 'late@example.com' });
  const signup = await startRequest(port, 'POST /auth/signup HTTP/1.1\r\nHost: errand.test\r\n');

  // What SIGTERM runs (src/main.ts): the HTTP server closes first, then the workers drain.
  const closed = errand.close();
  await waitFor(() => !errand.app.server.listening || undefined, 10000, 'the server to stop listening');

  // Contract: "stop accepting HTTP" — a new connection is refused at once, not left hanging.
  const refused = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(5000) }).then(
    () => 'answered',
    (error: Error & { cause?: { code?: string } }) => error.cause?.code ?? error.name,
  );
  t.equal(refused, 'ECONNREFUSED', 'a new connection is refused');

  const ready = await finishRequest(probe, '\r\n');
  t.equal(ready.error, undefined, 'no reset');
  t.match(ready.raw, /^HTTP\/1\.1 503 /, 'readyz answers 503: a load balancer takes errand out');
  t.match(ready.raw, /\r\nconnection: close\r\n/i, 'and the connection is closed after the answer');
  t.match(ready.raw, /"statusCode":503/, "in Fastify's error shape");

  const late = await finishRequest(signup, `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  t.equal(late.error, undefined, 'no reset');
  t.match(late.raw, /^HTTP\/1\.1 503 /, 'a signup arriving during the stop answers 503');
  await closed;
  // errand's pool is closed by now: look with a connection of our own.
  const client = new pg.Client({ connectionString: errand.config.DATABASE_URL });
  await client.connect();
  const { rowCount } = await client.query('SELECT 1 FROM users WHERE email = $1', ['late@example.com']);
  await client.end();
  t.equal(rowCount, 0, 'and is not half-done: no user, so no email');
  t.ok(
    errand.logs.lines().some((line) => line.res && (line.res as { statusCode?: number }).statusCode === 503),
    'the refused requests are logged',
  );
});
