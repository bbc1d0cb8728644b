import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import t from 'tap';
import { EMAIL_QUEUE, EMAIL_VERIFICATION_JOB } from '../../src/email/jobs.js';
import { tracingOn } from '../../src/core/tracing.js';
import { spawnErrand, startSmtpServer, startTestErrand, testEnv, waitFor, type T } from '../support/helpers.js';

// OTLP span kinds (opentelemetry-proto): SERVER 2, CLIENT 3, PRODUCER 4, CONSUMER 5.
const SERVER = 2;
const PRODUCER = 4;
const CONSUMER = 5;

interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
}

/** OTLP/JSON ids are hex; accept base64 too in case an exporter sends the protobuf-JSON mapping. */
function hexId(id: unknown): string {
  if (typeof id !== 'string' || id === '') return '';
  return /^[0-9a-f]+$/i.test(id) && (id.length === 32 || id.length === 16) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex');
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** A plain OTLP/HTTP receiver (JSON protocol) collecting every span exported to POST /v1/traces. */
async function startOtlpReceiver(t: T): Promise<{ url: string; spans: ReceivedSpan[] }> {
  const spans: ReceivedSpan[] = [];
  const server = createServer((req, res) => void answer(req, res));
  async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404).end();
      return;
    }
    type AnyValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean };
    const request = JSON.parse(body) as {
      resourceSpans?: {
        scopeSpans?: {
          spans?: {
            traceId: string;
            spanId: string;
            parentSpanId?: string;
            name: string;
            kind: number;
            attributes?: { key: string; value: AnyValue }[];
          }[];
        }[];
      }[];
    };
    for (const resourceSpans of request.resourceSpans ?? []) {
      for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
        for (const span of scopeSpans.spans ?? []) {
          spans.push({
            traceId: hexId(span.traceId),
            spanId: hexId(span.spanId),
            parentSpanId: hexId(span.parentSpanId),
            name: span.name,
            kind: span.kind,
            attributes: Object.fromEntries(
              (span.attributes ?? []).map((a) => [a.key, a.value.stringValue ?? a.value.intValue ?? a.value.boolValue]),
            ),
          });
        }
      }
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans };
}

t.test('traced errand: one signup is one trace, from the HTTP request through the outbox to the SMTP send', async (t) => {
  const receiver = await startOtlpReceiver(t);
  const smtp = await startSmtpServer(t);
  const env = testEnv(t, {
    SMTP_URL: smtp.url,
    LOG_LEVEL: 'info',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_BSP_SCHEDULE_DELAY: '100',
    // The signup's own publish, not the relay's, adds the job here; the relay has its own test below.
    OUTBOX_RELAY_GRACE_MS: '600000',
  });
  const errand = await spawnErrand(t, env);
  const db = new pg.Client({ connectionString: env.DATABASE_URL });
  await db.connect();
  t.teardown(() => db.end());

  t.test('signup: HTTP server span, pg, producer, consumer and SMTP send share one trace id', async (t) => {
    const res = await fetch(`${errand.baseUrl}/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'traced@example.com' }),
    });
    t.equal(res.status, 202);
    await res.text();

    const server = await waitFor(
      () => receiver.spans.find((s) => s.kind === SERVER && /signup/.test(JSON.stringify(s.attributes)) && s.name.startsWith('POST')),
      15000,
      'the signup HTTP server span',
    );
    const trace = server.traceId;
    const smtpSend = await waitFor(
      () => receiver.spans.find((s) => s.name === 'smtp send' && s.traceId === trace),
      15000,
      'the SMTP send span in the signup trace',
    );
    // The consumer span ends after its child (when the job completes), so it may come in a later export batch.
    await waitFor(
      () => receiver.spans.some((s) => s.kind === CONSUMER && s.traceId === trace) || undefined,
      15000,
      'the consumer span in the signup trace',
    ).catch(() => undefined);
    const inTrace = receiver.spans.filter((s) => s.traceId === trace);

    t.ok(
      inTrace.some((s) => s.attributes['db.system'] === 'postgresql' || s.attributes['db.system.name'] === 'postgresql'),
      'the signup statement is a pg span of the trace',
    );
    t.ok(
      inTrace.some((s) => s.attributes['db.system'] === 'redis' || s.attributes['db.system.name'] === 'redis'),
      'the job add is an ioredis span of the trace',
    );
    const producer = inTrace.find((s) => s.kind === PRODUCER);
    const consumer = inTrace.find((s) => s.kind === CONSUMER);
    t.ok(producer, 'a BullMQ producer span (the outbox publish) in the trace');
    t.ok(consumer, 'the email job consumer span in the trace');
    t.equal(consumer?.parentSpanId, producer?.spanId, 'the consumer is a child of the producer');
    t.equal(smtpSend.parentSpanId, consumer?.spanId, 'the SMTP send is a child of the consumer');
    t.equal(smtp.received.length, 1, 'the email went out');

    const row = await db.query<{ trace_context: { traceparent: string } | null }>(
      'select trace_context from outbox order by id desc limit 1',
    );
    t.match(
      row.rows[0]?.trace_context?.traceparent,
      new RegExp(`^00-${trace}-[0-9a-f]{16}-0[01]$`),
      'the outbox row carries the request trace',
    );

    const logged = errand.logLines().filter((line) => line.traceId === trace);
    t.ok(logged.length > 0, 'log lines of the request carry its traceId');
    t.ok(
      logged.every((line) => typeof line.spanId === 'string' && /^[0-9a-f]{16}$/.test(line.spanId)),
      'and a spanId',
    );
  });

  t.test('signups at the same moment: each job continues its own request trace (publishes share a pipeline)', async (t) => {
    // Each request brings its own trace (W3C traceparent); their jobs go to Redis in one addBulk.
    const traces = Array.from({ length: 6 }, (_, i) => `${'c0ffee'}${String(i).padStart(26, '0')}`);
    const responses = await Promise.all(
      traces.map((traceId, i) =>
        fetch(`${errand.baseUrl}/auth/signup`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${'ab'.repeat(7)}0${i + 1}-01` },
          body: JSON.stringify({ email: `concurrent${i}@example.com` }),
        }),
      ),
    );
    for (const res of responses) {
      t.equal(res.status, 202);
      await res.text();
    }
    for (const traceId of traces) {
      const send = await waitFor(
        () => receiver.spans.find((s) => s.name === 'smtp send' && s.traceId === traceId),
        15000,
        `the SMTP send span in trace ${traceId}`,
      );
      t.ok(send, `trace ${traceId}: its own email's send`);
    }
    t.equal(new Set(receiver.spans.filter((s) => s.name === 'smtp send' && traces.includes(s.traceId)).map((s) => s.traceId)).size, 6);
  });

  t.test('verify and tracking links: no exported span carries the raw token of their URL', async (t) => {
    const verifyToken = randomBytes(32).toString('base64url');
    const trackingToken = randomBytes(32).toString('base64url');
    const orderId = randomUUID();
    const urls = [`/auth/verify-email?token=${verifyToken}`, `/orders/${orderId}/tracking?token=${trackingToken}&lang=en`];
    for (const url of urls) {
      const res = await fetch(`${errand.baseUrl}${url}`, { headers: { accept: 'application/json' } });
      t.ok(res.status < 500, `${url.split('?')[0]} answered ${res.status}`);
      await res.text();
    }
    // Both requests' server spans and @fastify/otel's request spans, in whatever export batch they come.
    for (const path of ['/auth/verify-email', `/orders/${orderId}/tracking`]) {
      await waitFor(
        () => (receiver.spans.filter((s) => String(s.attributes['url.path']).startsWith(path)).length >= 2 ? true : undefined),
        15000,
        `the HTTP and Fastify spans of ${path}`,
      );
    }
    const exported = JSON.stringify(receiver.spans);
    t.notOk(exported.includes(verifyToken), 'the verification token is in no exported span');
    t.notOk(exported.includes(trackingToken), 'the tracking token is in no exported span');
    const server = receiver.spans.find((s) => s.kind === SERVER && s.attributes['url.path'] === `/orders/${orderId}/tracking`);
    t.equal(server?.attributes['url.query'], 'token=REDACTED&lang=en', 'the query is kept, its token redacted');
  });

  t.test('a row published by the relay seconds later still continues the trace it was written in', async (t) => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parentSpanId = '00f067aa0ba902b7';
    const user = await db.query<{ id: string }>(`insert into users (email) values ('relayed@example.com') returning id`);
    // Written as a request would have, ten minutes ago, and never published: the relay's job.
    await db.query(
      `insert into outbox (queue, job_name, payload, trace_context, created_at)
       values ($1, $2, jsonb_build_object('userId', $3::text), $4::jsonb, now() - interval '10 minutes')`,
      [EMAIL_QUEUE, EMAIL_VERIFICATION_JOB, user.rows[0].id, JSON.stringify({ traceparent: `00-${traceId}-${parentSpanId}-01` })],
    );
    const smtpSend = await waitFor(
      () => receiver.spans.find((s) => s.name === 'smtp send' && s.traceId === traceId),
      15000,
      'the SMTP send span in the stored trace',
    );
    // The consumer span ends after its child (when the job completes), so it may come in a later export batch.
    const consumer = await waitFor(
      () => receiver.spans.find((s) => s.kind === CONSUMER && s.traceId === traceId),
      15000,
      'the consumer span in the stored trace',
    ).catch(() => undefined);
    t.ok(consumer, 'the consumer span is in the trace stored with the row');
    t.equal(consumer?.parentSpanId, parentSpanId, 'its parent is the span that wrote the row');
    t.equal(smtpSend.parentSpanId, consumer?.spanId, 'the SMTP send is a child of the consumer');
    await waitFor(() => smtp.received.some((m) => m.to.includes('relayed@example.com')) || undefined, 5000, 'the relayed email');
  });
});

t.test('tracing off: no OpenTelemetry module is loaded and nothing is recorded', async (t) => {
  const smtp = await startSmtpServer(t);
  const env = testEnv(t, { SMTP_URL: smtp.url, OTEL_EXPORTER_OTLP_ENDPOINT: undefined });
  const errand = await startTestErrand(t, env);
  const res = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'untraced@example.com' } });
  t.equal(res.statusCode, 202);
  await waitFor(() => smtp.received.length > 0 || undefined, 15000, 'the email');

  t.equal(tracingOn(), false);
  // prom-client requires @opentelemetry/api itself (exemplars), tracing or not: the no-op API, and nothing else.
  const loaded = Object.keys(createRequire(import.meta.url).cache).filter(
    (file) =>
      (file.includes('/@opentelemetry/') && !file.includes('/@opentelemetry/api/')) ||
      file.includes('/bullmq-otel/') ||
      file.includes('/@fastify/otel/'),
  );
  t.same(loaded, [], 'no OpenTelemetry SDK, exporter or instrumentation module in the module cache');
  t.notOk(Symbol.for('opentelemetry.js.api.1') in globalThis, 'no global tracer provider, propagator or context manager registered');
  t.equal(errand.deps.queues.email.opts.telemetry, undefined, 'queues carry no telemetry');
  const db = new pg.Client({ connectionString: env.DATABASE_URL });
  await db.connect();
  t.teardown(() => db.end());
  const rows = await db.query<{ trace_context: unknown }>('select trace_context from outbox');
  t.ok(rows.rows.length > 0 && rows.rows.every((row) => row.trace_context === null), 'outbox rows carry no trace context');
});
