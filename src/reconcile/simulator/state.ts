import { setTimeout as delay } from 'node:timers/promises';
import { Type, type Static } from 'typebox';
import { ProviderPaymentStatusSchema } from '../provider.js';

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

export const SimRefFailureSchema = Type.Object({ failWith: Type.Union([SimFailureSchema, Type.Null()]) }, { additionalProperties: false });

const DEFAULT_CONFIG: SimConfig = { latencyMs: 0, failRate: 0, failWith: 500 };
// A "timeout" answer is held this long at most (the client gives up well before).
export const HOLD_MS = 120_000;

export type SimAnswer =
  { status: 200; payment: SimPayment & { providerRef: string } } | { status: 404 | 429 | 500 | 503 } | { status: 'timeout' };

/** Waits `ms`, or less if `signal` aborts first; never rejects, never holds the process open. */
export async function simDelay(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return;
  await delay(ms, undefined, { signal, ref: false }).catch(() => undefined);
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

  get paymentCount(): number {
    return this.payments.size;
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
      await simDelay(this.config.latencyMs, signal);
      const failure = this.refFailures.get(providerRef) ?? (Math.random() < this.config.failRate ? this.config.failWith : undefined);
      if (failure !== undefined) return { status: failure };
      const payment = this.payments.get(providerRef);
      if (!payment) return { status: 404 };
      return { status: 200, payment: { providerRef, ...payment } };
    } finally {
      this.inFlightNow -= 1;
    }
  }
}
