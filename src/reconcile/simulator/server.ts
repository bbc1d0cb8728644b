import Fastify, { type FastifyReply } from 'fastify';
import type { Server } from 'node:http';
import type { TSchema } from 'typebox';
import { Value } from 'typebox/value';
import { HOLD_MS, simDelay, SimConfigSchema, SimPaymentSchema, SimRefFailureSchema, type ProviderSimulator } from './state.js';
import { firstValidationError } from '../../core/schemas.js';

export interface RunningSimulator {
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

const BODY_LIMIT = 64 * 1024;

// The simulator's own answers: `{error}` bodies, not errand's `{statusCode, error, message}`.
function send(reply: FastifyReply, status: number, body: unknown) {
  return reply.code(status).type('application/json').send(JSON.stringify(body));
}

function schemaError(schema: TSchema, value: unknown): string {
  return firstValidationError(Value.Errors(schema, value));
}

/** Bodies are JSON whatever their content type (curl and fetch send text/plain); empty means `{}`. */
function parseBody(raw: unknown): unknown {
  if (!Buffer.isBuffer(raw) || raw.length === 0) return {};
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    return new Error('body is not valid JSON');
  }
}

/** The simulator's HTTP API: the provider's `GET /v1/payments/:ref` and the `/_sim` control routes. */
export function buildSimulatorApp(sim: ProviderSimulator) {
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    // Held "timeout" answers must not keep a closing server open.
    forceCloseConnections: true,
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, maxParamLength: 1000 },
  });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  app.setNotFoundHandler((_request, reply) => send(reply, 404, { error: 'not found' }));
  app.setErrorHandler((error: { code?: string }, _request, reply) =>
    error.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
      ? send(reply, 400, { error: 'body too large' })
      : send(reply, 500, { error: 'simulator error' }),
  );

  app.get<{ Params: { ref: string } }>('/v1/payments/:ref', async (request, reply) => {
    const aborted = new AbortController();
    reply.raw.on('close', () => aborted.abort());
    const answer = await sim.answer(request.params.ref, aborted.signal);
    if (answer.status === 'timeout') {
      // Say nothing until the client gives up (or a long while has passed), then drop the connection.
      reply.hijack();
      await simDelay(HOLD_MS, aborted.signal);
      if (!reply.raw.writableEnded) reply.raw.destroy();
      return;
    }
    if (answer.status === 200) return send(reply, 200, answer.payment);
    if (answer.status === 404) return send(reply, 404, { error: 'payment not found' });
    if (answer.status === 429) reply.header('retry-after', '1');
    return send(reply, answer.status, { error: answer.status === 429 ? 'too many requests' : 'provider error' });
  });

  app.put<{ Params: { ref: string } }>('/_sim/payments/:ref', async (request, reply) => {
    const body = parseBody(request.body);
    if (body instanceof Error) return send(reply, 400, { error: body.message });
    if (!Value.Check(SimPaymentSchema, body)) return send(reply, 400, { error: schemaError(SimPaymentSchema, body) });
    sim.setPayment(request.params.ref, body);
    return send(reply, 200, { providerRef: request.params.ref, ...body });
  });
  app.get<{ Params: { ref: string } }>('/_sim/payments/:ref', async (request, reply) => {
    const { ref } = request.params;
    const payment = sim.getPayment(ref);
    return payment
      ? send(reply, 200, { providerRef: ref, ...payment, requests: sim.requests.get(ref) ?? 0 })
      : send(reply, 404, { error: 'payment not found' });
  });
  app.delete<{ Params: { ref: string } }>('/_sim/payments/:ref', async (request, reply) =>
    send(reply, sim.deletePayment(request.params.ref) ? 200 : 404, { deleted: request.params.ref }),
  );

  app.put<{ Params: { ref: string } }>('/_sim/failures/:ref', async (request, reply) => {
    const body = parseBody(request.body);
    if (body instanceof Error) return send(reply, 400, { error: body.message });
    if (!Value.Check(SimRefFailureSchema, body)) return send(reply, 400, { error: schemaError(SimRefFailureSchema, body) });
    sim.failReference(request.params.ref, body.failWith);
    return send(reply, 200, { providerRef: request.params.ref, failWith: body.failWith });
  });
  app.delete<{ Params: { ref: string } }>('/_sim/failures/:ref', async (request, reply) => {
    sim.failReference(request.params.ref, null);
    return send(reply, 200, { providerRef: request.params.ref, failWith: null });
  });

  app.get('/_sim/config', async (_request, reply) => send(reply, 200, sim.settings));
  app.put('/_sim/config', async (request, reply) => {
    const body = parseBody(request.body);
    if (body instanceof Error) return send(reply, 400, { error: body.message });
    if (!Value.Check(SimConfigSchema, body)) return send(reply, 400, { error: schemaError(SimConfigSchema, body) });
    return send(reply, 200, sim.configure(body));
  });
  app.get('/_sim/stats', async (_request, reply) =>
    send(reply, 200, { requests: sim.totalRequests, inFlight: sim.inFlight, maxInFlight: sim.maxInFlight, payments: sim.paymentCount }),
  );
  app.post('/_sim/reset', async (_request, reply) => {
    sim.reset();
    return send(reply, 200, { reset: true });
  });
  return app;
}

/** Serves the simulator's HTTP API; port 0 picks a free one. */
export async function serveSimulator(sim: ProviderSimulator, options: { port?: number; host?: string } = {}): Promise<RunningSimulator> {
  const app = buildSimulatorApp(sim);
  await app.listen({ port: options.port ?? 0, host: options.host ?? '127.0.0.1' });
  const address = app.server.address() as { port: number; address: string };
  const host = address.address.includes(':') ? `[${address.address}]` : address.address;
  return { server: app.server, url: `http://${host}:${address.port}`, port: address.port, close: () => app.close() };
}
