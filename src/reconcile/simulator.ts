import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Type, type Static, type TSchema } from 'typebox';
import { Value } from 'typebox/value';
import { ProviderPaymentStatusSchema, type PaymentLookup, type PaymentProvider } from './provider.js';

export const SIM_FAILURES = [429, 500, 503, 'timeout'] as const;
export type SimFailure = (typeof SIM_FAILURES)[number];

const SimFailureSchema = Type.Union([Type.Literal(429), Type.Literal(500), Type.Literal(503), Type.Literal('timeout')]);

export const SimPaymentSchema = Type.Object(
  {
    status: ProviderPaymentStatusSchema,
    amount: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    currency: Type.String({ pattern: '^[A-Z]{3}$' }),
  },
  { additionalProperties: false },
);
export type SimPayment = Static<typeof SimPaymentSchema>;

export const SimConfigSchema = Type.Object(
  {
    latencyMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000 })),
    // Share of all requests (0..1) answered with `failWith` instead of the payment.
    failRate: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    failWith: Type.Optional(SimFailureSchema),
  },
  { additionalProperties: false },
);
export type SimConfig = Required<Static<typeof SimConfigSchema>>;

const SimRefFailureSchema = Type.Object({ failWith: Type.Union([SimFailureSchema, Type.Null()]) }, { additionalProperties: false });

const DEFAULT_CONFIG: SimConfig = { latencyMs: 0, failRate: 0, failWith: 500 };
// A "timeout" answer is held this long at most (the client gives up well before).
const HOLD_MS = 120_000;

type SimAnswer = { status: 200; payment: SimPayment & { providerRef: string } } | { status: 404 | 429 | 500 | 503 } | { status: 'timeout' };

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0) return resolve();
    const timer = setTimeout(resolve, ms);
    timer.unref();
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * A controllable stand-in for the payment provider: the same
 * `GET /v1/payments/{ref}` answers as the contract's provider API, plus knobs
 * for latency and failures. It knows only the references it was told about:
 * any other answers 404 (unknown), which the sweep leaves unchanged — so the
 * built-in simulator never settles a real order by itself.
 */
export class ProviderSimulator {
  private readonly payments = new Map<string, SimPayment>();
  private readonly refFailures = new Map<string, SimFailure>();
  private config: SimConfig = { ...DEFAULT_CONFIG };
  private inFlightNow = 0;
  /** Requests answered or in progress, per reference. */
  readonly requests = new Map<string, number>();
  /** Highest number of lookups in progress at once since the last reset. */
  maxInFlight = 0;

  setPayment(providerRef: string, payment: SimPayment): void {
    this.payments.set(providerRef, { ...payment });
  }

  deletePayment(providerRef: string): boolean {
    return this.payments.delete(providerRef);
  }

  getPayment(providerRef: string): SimPayment | undefined {
    return this.payments.get(providerRef);
  }

  /** Makes one reference fail (or, with null, answer normally again). */
  failReference(providerRef: string, failWith: SimFailure | null): void {
    if (failWith === null) this.refFailures.delete(providerRef);
    else this.refFailures.set(providerRef, failWith);
  }

  configure(patch: Partial<SimConfig>): SimConfig {
    this.config = { ...this.config, ...patch };
    return { ...this.config };
  }

  get settings(): SimConfig {
    return { ...this.config };
  }

  get inFlight(): number {
    return this.inFlightNow;
  }

  get totalRequests(): number {
    let total = 0;
    for (const count of this.requests.values()) total += count;
    return total;
  }

  reset(): void {
    this.payments.clear();
    this.refFailures.clear();
    this.requests.clear();
    this.config = { ...DEFAULT_CONFIG };
    this.maxInFlight = 0;
  }

  /** Decides the answer for one lookup, after the configured latency. */
  async answer(providerRef: string, signal?: AbortSignal): Promise<SimAnswer> {
    this.requests.set(providerRef, (this.requests.get(providerRef) ?? 0) + 1);
    this.inFlightNow += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlightNow);
    try {
      await sleep(this.config.latencyMs, signal);
      const failure = this.refFailures.get(providerRef) ?? (Math.random() < this.config.failRate ? this.config.failWith : undefined);
      if (failure !== undefined) return { status: failure };
      const payment = this.payments.get(providerRef);
      if (!payment) return { status: 404 };
      return { status: 200, payment: { providerRef, ...payment } };
    } finally {
      this.inFlightNow -= 1;
    }
  }

  /** An in-memory client with the HTTP client's classification (used when PAYMENT_PROVIDER_URL is unset). */
  client(options: { timeoutMs: number }): PaymentProvider {
    return {
      getPayment: async (providerRef): Promise<PaymentLookup> => {
        const signal = AbortSignal.timeout(options.timeoutMs);
        const answer = await Promise.race([
          this.answer(providerRef, signal),
          new Promise<{ status: 'timeout' }>((resolve) => signal.addEventListener('abort', () => resolve({ status: 'timeout' }))),
        ]);
        switch (answer.status) {
          case 200:
            return { kind: 'found', status: answer.payment.status, amount: answer.payment.amount, currency: answer.payment.currency };
          case 404:
            return { kind: 'unknown' };
          case 'timeout':
            if (!signal.aborted) await new Promise((resolve) => signal.addEventListener('abort', resolve));
            return { kind: 'transient', reason: 'timeout' };
          default:
            return { kind: 'transient', reason: `http ${answer.status}` };
        }
      },
    };
  }

  /** The HTTP API: the provider's read route and the `/_sim` control routes. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    void this.route(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, { error: 'simulator error' });
    });
  };

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://sim.invalid');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const method = req.method ?? 'GET';

    if (method === 'GET' && parts.length === 3 && parts[0] === 'v1' && parts[1] === 'payments') {
      const aborted = new AbortController();
      res.on('close', () => aborted.abort());
      const answer = await this.answer(parts[2]!, aborted.signal);
      if (answer.status === 'timeout') {
        // Say nothing until the client gives up (or a long while has passed).
        await sleep(HOLD_MS, aborted.signal);
        if (!res.writableEnded) res.destroy();
        return;
      }
      if (answer.status === 200) return send(res, 200, answer.payment);
      if (answer.status === 404) return send(res, 404, { error: 'payment not found' });
      if (answer.status === 429) res.setHeader('retry-after', '1');
      return send(res, answer.status, { error: answer.status === 429 ? 'too many requests' : 'provider error' });
    }

    if (parts[0] !== '_sim') return send(res, 404, { error: 'not found' });
    const body = method === 'PUT' || method === 'POST' ? await readJson(req) : undefined;
    if (body instanceof Error) return send(res, 400, { error: body.message });
    const [, resource, ref] = parts;

    if (resource === 'payments' && ref && parts.length === 3) {
      if (method === 'PUT') {
        if (!Value.Check(SimPaymentSchema, body)) return send(res, 400, { error: schemaError(SimPaymentSchema, body) });
        this.setPayment(ref, body);
        return send(res, 200, { providerRef: ref, ...body });
      }
      if (method === 'GET') {
        const payment = this.getPayment(ref);
        return payment ? send(res, 200, { providerRef: ref, ...payment, requests: this.requests.get(ref) ?? 0 }) : send(res, 404, { error: 'payment not found' });
      }
      if (method === 'DELETE') return send(res, this.deletePayment(ref) ? 200 : 404, { deleted: ref });
    }
    if (resource === 'failures' && ref && parts.length === 3) {
      if (method === 'PUT') {
        if (!Value.Check(SimRefFailureSchema, body)) return send(res, 400, { error: schemaError(SimRefFailureSchema, body) });
        this.failReference(ref, body.failWith);
        return send(res, 200, { providerRef: ref, failWith: body.failWith });
      }
      if (method === 'DELETE') {
        this.failReference(ref, null);
        return send(res, 200, { providerRef: ref, failWith: null });
      }
    }
    if (resource === 'config' && parts.length === 2) {
      if (method === 'GET') return send(res, 200, this.settings);
      if (method === 'PUT') {
        if (!Value.Check(SimConfigSchema, body)) return send(res, 400, { error: schemaError(SimConfigSchema, body) });
        return send(res, 200, this.configure(body as Partial<SimConfig>));
      }
    }
    if (resource === 'stats' && parts.length === 2 && method === 'GET') {
      return send(res, 200, { requests: this.totalRequests, inFlight: this.inFlight, maxInFlight: this.maxInFlight, payments: this.payments.size });
    }
    if (resource === 'reset' && parts.length === 2 && method === 'POST') {
      this.reset();
      return send(res, 200, { reset: true });
    }
    return send(res, 404, { error: 'not found' });
  }

  /** Serves the HTTP API; port 0 picks a free one. */
  async listen(options: { port?: number; host?: string } = {}): Promise<RunningSimulator> {
    const server = createServer(this.handle);
    // Held "timeout" answers must not keep a closing server open.
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
    });
    const address = server.address() as { port: number; address: string };
    const host = address.address.includes(':') ? `[${address.address}]` : address.address;
    return {
      server,
      url: `http://${host}:${address.port}`,
      port: address.port,
      close: () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  }
}

export interface RunningSimulator {
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 64 * 1024) return new Error('body too large');
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    return new Error('body is not valid JSON');
  }
}

function schemaError(schema: TSchema, value: unknown): string {
  const [first] = Value.Errors(schema, value);
  return `${first?.instancePath || 'body'} ${first?.message ?? 'is invalid'}`;
}
