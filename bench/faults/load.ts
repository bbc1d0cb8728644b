// A paced (open-model) load driver for the fault run and the soak: signups, orders and signed payment.succeeded
// webhooks, each at its own steady rate, over plain node:http with keep-alive. Every request is logged compactly
// (route, send time, latency, status); what each 2xx answer promises (an email to a recipient) is remembered.
import { createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';

export const ROUTES = ['signup', 'order', 'webhook'] as const;
export type Route = (typeof ROUTES)[number];
const ROUTE_PATH: Record<Route, string> = { signup: '/auth/signup', order: '/orders', webhook: '/payments/webhook' };

/** Status codes in the log besides HTTP ones. */
export const NETWORK_ERROR = 0;
export const TIMED_OUT = -1;

/** Append-only request log in typed arrays (a soak logs ~10^6 requests). */
export class RequestLog {
  length = 0;
  route = new Uint8Array(1024);
  sentAt = new Float64Array(1024);
  latency = new Float32Array(1024);
  status = new Int16Array(1024);

  add(route: number, sentAt: number, latency: number, status: number): void {
    if (this.length === this.route.length) this.grow();
    const i = this.length++;
    this.route[i] = route;
    this.sentAt[i] = sentAt;
    this.latency[i] = latency;
    this.status[i] = status;
  }

  private grow(): void {
    const size = this.route.length * 2;
    const route = new Uint8Array(size);
    route.set(this.route);
    const sentAt = new Float64Array(size);
    sentAt.set(this.sentAt);
    const latency = new Float32Array(size);
    latency.set(this.latency);
    const status = new Int16Array(size);
    status.set(this.status);
    Object.assign(this, { route, sentAt, latency, status });
  }
}

export type EmailKind = 'verification' | 'tracking';

export interface Expectation {
  kind: EmailKind;
  /** ms on the run clock of the first 2xx answer that promised the email (undefined: paid per the database only). */
  answeredAt: number | undefined;
  orderId?: string;
}

interface Order {
  id: string;
  providerRef: string;
  email: string;
  amount: number;
  currency: string;
}

interface WebhookDelivery {
  order: Order;
  eventId: string;
  attempts: number;
  notBefore: number;
}

export interface LoadOptions {
  /** The api's base URL (the api is restarted on the same port). */
  url: string;
  rates: Record<Route, number>;
  /** Per route: a due request is skipped (and counted) while this many of its route are in flight. */
  maxInFlight: number;
  connections: number;
  timeoutMs: number;
  webhookSecret: string;
  /** A webhook answered non-2xx or not at all is delivered again (same event id), like a provider would. */
  webhookRetries: number;
  webhookRetryDelayMs: number;
  clock: () => number;
}

export interface RouteCounters {
  scheduled: number;
  sent: number;
  skipped: number;
}

function signature(secret: string, body: string): string {
  const t = Math.floor(Date.now() / 1000);
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${body}`).digest('hex')}`;
}

export class Load {
  readonly log = new RequestLog();
  /** Recipient address → the email a 2xx answer promised. */
  readonly expected = new Map<string, Expectation>();
  readonly counters: Record<Route, RouteCounters> = {
    signup: { scheduled: 0, sent: 0, skipped: 0 },
    order: { scheduled: 0, sent: 0, skipped: 0 },
    webhook: { scheduled: 0, sent: 0, skipped: 0 },
  };
  /** Webhook deliveries given up after `webhookRetries` attempts, and due webhooks with no created order to pay. */
  webhooksGivenUp = 0;
  webhooksWithoutOrder = 0;
  webhookRedeliveries = 0;
  readonly inFlight: Record<Route, number> = { signup: 0, order: 0, webhook: 0 };

  private readonly tag = randomBytes(3).toString('hex');
  private seq = 0;
  private readonly agent: http.Agent;
  private readonly unpaid: Order[] = [];
  private readonly redeliveries: WebhookDelivery[] = [];
  private timer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly options: LoadOptions) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: options.connections });
  }

  /** Starts issuing requests; `setRates` may change the rates while running. */
  start(): void {
    this.startedAt = this.options.clock();
    const issued: Record<Route, number> = { signup: 0, order: 0, webhook: 0 };
    const baseline: Record<Route, { at: number; count: number }> = {
      signup: { at: this.startedAt, count: 0 },
      order: { at: this.startedAt, count: 0 },
      webhook: { at: this.startedAt, count: 0 },
    };
    this.rebase = (now) => {
      for (const route of ROUTES) baseline[route] = { at: now, count: issued[route] };
    };
    this.timer = setInterval(() => {
      const now = this.options.clock();
      for (const route of ROUTES) {
        const due = baseline[route].count + Math.floor(((now - baseline[route].at) / 1000) * this.options.rates[route]) - issued[route];
        for (let i = 0; i < due; i++) {
          issued[route] += 1;
          this.counters[route].scheduled += 1;
          if (this.inFlight[route] >= this.options.maxInFlight) {
            this.counters[route].skipped += 1;
            continue;
          }
          this.issue(route, now);
        }
      }
    }, 5);
  }

  private rebase: (now: number) => void = () => {};

  setRates(rates: Record<Route, number>): void {
    this.rebase(this.options.clock());
    Object.assign(this.options.rates, rates);
  }

  /** Stops issuing and waits for every request in flight to finish (each is bounded by the timeout). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
    this.agent.destroy();
  }

  private issue(route: Route, now: number): void {
    let body: string;
    let headers: Record<string, string> = { 'content-type': 'application/json' };
    let onAnswer: (status: number, text: string, at: number) => void = () => {};
    this.seq += 1;
    if (route === 'signup') {
      const email = `su-${this.tag}-${this.seq}@example.com`;
      body = JSON.stringify({ email, name: 'Faults' });
      onAnswer = (status, _text, at) => {
        if (status >= 200 && status < 300) this.expected.set(email, { kind: 'verification', answeredAt: at });
      };
    } else if (route === 'order') {
      const email = `ord-${this.tag}-${this.seq}@example.com`;
      body = JSON.stringify({ email, amount: 1999, currency: 'USD' });
      onAnswer = (status, text) => {
        if (status !== 201) return;
        try {
          const created = JSON.parse(text) as { id: string; providerRef: string };
          this.unpaid.push({ id: created.id, providerRef: created.providerRef, email, amount: 1999, currency: 'USD' });
        } catch {
          // a 201 without its JSON counts in the log as a 2xx; nothing to pay
        }
      };
    } else {
      const delivery = this.nextDelivery(now);
      if (!delivery) {
        this.webhooksWithoutOrder += 1;
        this.counters.webhook.skipped += 1;
        return;
      }
      delivery.attempts += 1;
      body = JSON.stringify({
        id: delivery.eventId,
        type: 'payment.succeeded',
        data: { providerRef: delivery.order.providerRef, amount: delivery.order.amount, currency: delivery.order.currency },
      });
      headers = { ...headers, 'webhook-signature': signature(this.options.webhookSecret, body) };
      onAnswer = (status, _text, at) => {
        if (status === 200) {
          if (!this.expected.has(delivery.order.email))
            this.expected.set(delivery.order.email, { kind: 'tracking', answeredAt: at, orderId: delivery.order.id });
        } else if ((status >= 500 || status <= 0 || status === 429) && delivery.attempts <= this.options.webhookRetries) {
          delivery.notBefore = at + this.options.webhookRetryDelayMs;
          this.redeliveries.push(delivery);
        } else {
          this.webhooksGivenUp += 1;
        }
      };
    }
    this.counters[route].sent += 1;
    this.inFlight[route] += 1;
    const routeIndex = ROUTES.indexOf(route);
    const sentAt = this.options.clock();
    const done = this.request(ROUTE_PATH[route], headers, body).then(({ status, text }) => {
      const at = this.options.clock();
      this.inFlight[route] -= 1;
      this.log.add(routeIndex, sentAt, at - sentAt, status);
      onAnswer(status, text, at);
    });
    this.pending.add(done);
    void done.finally(() => this.pending.delete(done));
  }

  private nextDelivery(now: number): WebhookDelivery | undefined {
    const first = this.redeliveries[0];
    if (first && first.notBefore <= now) {
      this.redeliveries.shift();
      this.webhookRedeliveries += 1;
      return first;
    }
    const order = this.unpaid.shift();
    if (!order) return undefined;
    return { order, eventId: `evt_${this.tag}_${order.id}`, attempts: 0, notBefore: 0 };
  }

  /** Orders created (201) but not (yet) paid by a webhook, and deliveries waiting to be repeated. */
  backlog(): { unpaidOrders: number; redeliveriesWaiting: number } {
    return { unpaidOrders: this.unpaid.length, redeliveriesWaiting: this.redeliveries.length };
  }

  private request(path: string, headers: Record<string, string>, body: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve) => {
      let settled = false;
      const finish = (status: number, text = '') => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ status, text });
      };
      const req = http.request(
        `${this.options.url}${path}`,
        { method: 'POST', agent: this.agent, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => finish(res.statusCode ?? NETWORK_ERROR, Buffer.concat(chunks).toString('utf8')));
          res.on('error', () => finish(NETWORK_ERROR));
        },
      );
      const timer = setTimeout(() => {
        finish(TIMED_OUT);
        req.destroy();
      }, this.options.timeoutMs);
      req.on('error', () => finish(NETWORK_ERROR));
      req.end(body);
    });
  }
}
