// Turns the request log, the promised emails and the emails the SMTP server accepted into the report's figures:
// per-route answers, lost and repeated emails (each repeat explained), latency and recovery around each fault.
import { percentile, round } from '../lib.js';
import { NETWORK_ERROR, ROUTES, TIMED_OUT, type EmailKind, type Expectation, type Load, type Route } from './load.js';
import type { ReceivedCopy } from './smtp.js';

export interface RouteSummary {
  route: Route;
  scheduled: number;
  skipped: number;
  sent: number;
  answered: number;
  '2xx': number;
  '4xx': number;
  '5xx': number;
  errors: number;
  timeouts: number;
  p50: number;
  p99: number;
  max: number;
}

export function summariseRoutes(load: Load, from = 0, to = Infinity): RouteSummary[] {
  const { log } = load;
  return ROUTES.map((route, index) => {
    const latencies: number[] = [];
    const counts = { answered: 0, ok: 0, c4: 0, c5: 0, errors: 0, timeouts: 0, sent: 0 };
    for (let i = 0; i < log.length; i++) {
      if (log.route[i] !== index || log.sentAt[i] < from || log.sentAt[i] >= to) continue;
      counts.sent += 1;
      const status = log.status[i];
      latencies.push(log.latency[i]);
      if (status === NETWORK_ERROR) counts.errors += 1;
      else if (status === TIMED_OUT) counts.timeouts += 1;
      else {
        counts.answered += 1;
        if (status >= 200 && status < 300) counts.ok += 1;
        else if (status >= 500) counts.c5 += 1;
        else if (status >= 400) counts.c4 += 1;
      }
    }
    latencies.sort((a, b) => a - b);
    const whole = from === 0 && to === Infinity;
    return {
      route,
      scheduled: whole ? load.counters[route].scheduled : NaN,
      skipped: whole ? load.counters[route].skipped : NaN,
      sent: counts.sent,
      answered: counts.answered,
      '2xx': counts.ok,
      '4xx': counts.c4,
      '5xx': counts.c5,
      errors: counts.errors,
      timeouts: counts.timeouts,
      p50: round(percentile(latencies, 50), 1),
      p99: round(percentile(latencies, 99), 1),
      max: round(latencies.at(-1) ?? NaN, 1),
    };
  });
}

/** ms from `at` to the first 2xx answer of `route` to a request sent at or after `at` (undefined: none). */
export function firstOkAfter(load: Load, route: Route, at: number): number | undefined {
  const { log } = load;
  const index = ROUTES.indexOf(route);
  let best: number | undefined;
  for (let i = 0; i < log.length; i++) {
    if (log.route[i] !== index || log.sentAt[i] < at || log.status[i] < 200 || log.status[i] >= 300) continue;
    const answered = log.sentAt[i] + log.latency[i] - at;
    if (best === undefined || answered < best) best = answered;
  }
  return best === undefined ? undefined : round(best, 0);
}

/** Rate and p99 per route of the requests sent in each `bucketMs` from `start` to `end` (the soak's per-minute p99). */
export function p99Buckets(load: Load, bucketMs: number, start: number, end: number): Array<Record<string, number | string>> {
  const { log } = load;
  const buckets: number[][][] = [];
  for (let i = 0; i < log.length; i++) {
    if (log.sentAt[i] < start) continue;
    const b = Math.floor((log.sentAt[i] - start) / bucketMs);
    buckets[b] ??= ROUTES.map(() => []);
    buckets[b][log.route[i]].push(log.latency[i]);
  }
  const rows: Array<Record<string, number | string>> = [];
  // A last bucket shorter than half a bucket (the load stops a little after a whole number of buckets) is left out.
  for (let b = 0; start + (b + 0.5) * bucketMs < end; b++) {
    const row: Record<string, number | string> = { from_s: (b * bucketMs) / 1000 };
    ROUTES.forEach((route, r) => {
      const values = (buckets[b]?.[r] ?? []).sort((x, y) => x - y);
      row[`${route}_rps`] = round(values.length / (bucketMs / 1000), 1);
      row[`${route}_p99`] = round(percentile(values, 99), 1);
    });
    rows.push(row);
  }
  return rows;
}

export interface KillEvent {
  role: 'api' | 'worker';
  /** run clock ms of the SIGKILL. */
  at: number;
}

export interface FaultWindow {
  name: string;
  injectedAt: number;
  recoveredAt: number;
}

export interface Duplicate {
  recipient: string;
  kind: EmailKind | 'unknown';
  copies: number;
  firstAt: number;
  repeatAt: number;
  sameMessageId: boolean | 'missing';
  explanation: string;
  allowed: boolean;
}

export interface EmailSummary {
  kind: EmailKind;
  expected: number;
  expectedFrom2xx: number;
  /** Tracking only: orders the database has paid whose webhook never got a 2xx answer here. */
  paidWithoutAnswer: number;
  received: number;
  lost: number;
  duplicates: number;
  duplicatesAllowed: number;
}

export interface EmailAudit {
  summaries: EmailSummary[];
  lost: Array<{ recipient: string; kind: EmailKind; answeredAt: number | undefined }>;
  duplicates: Duplicate[];
  /** Accepted messages to recipients no 2xx promised (a request that failed after its commit, e.g. a killed api). */
  unpromised: number;
}

function kindOf(recipient: string): EmailKind | 'unknown' {
  if (recipient.startsWith('su-')) return 'verification';
  if (recipient.startsWith('ord-')) return 'tracking';
  return 'unknown';
}

/**
 * Lost: a promised email never accepted. Repeats: every copy after the first to one recipient (each signup and each
 * order has its own address). A repeat is allowed only when a worker was killed -9 between the first copy's
 * acceptance and the repeat, within `killWindowMs` of that acceptance (the send was accepted but not yet recorded),
 * and the two copies carry the same Message-ID; a copy without a Message-ID is tolerated (flagged 'missing').
 */
export function auditEmails(
  expected: Map<string, Expectation>,
  received: Map<string, ReceivedCopy[]>,
  kills: KillEvent[],
  faults: FaultWindow[],
  killWindowMs: number,
): EmailAudit {
  const lost: EmailAudit['lost'] = [];
  const duplicates: Duplicate[] = [];
  const summaries: Record<EmailKind, EmailSummary> = {
    verification: {
      kind: 'verification',
      expected: 0,
      expectedFrom2xx: 0,
      paidWithoutAnswer: 0,
      received: 0,
      lost: 0,
      duplicates: 0,
      duplicatesAllowed: 0,
    },
    tracking: {
      kind: 'tracking',
      expected: 0,
      expectedFrom2xx: 0,
      paidWithoutAnswer: 0,
      received: 0,
      lost: 0,
      duplicates: 0,
      duplicatesAllowed: 0,
    },
  };
  for (const [recipient, expectation] of expected) {
    const summary = summaries[expectation.kind];
    summary.expected += 1;
    if (expectation.answeredAt === undefined) summary.paidWithoutAnswer += 1;
    else summary.expectedFrom2xx += 1;
    if (received.has(recipient)) summary.received += 1;
    else {
      summary.lost += 1;
      lost.push({ recipient, kind: expectation.kind, answeredAt: expectation.answeredAt });
    }
  }
  let unpromised = 0;
  const workerKills = kills.filter((kill) => kill.role === 'worker');
  for (const [recipient, copies] of received) {
    if (!expected.has(recipient)) unpromised += 1;
    const kind = kindOf(recipient);
    const first = copies[0];
    for (const repeat of copies.slice(1)) {
      const sameMessageId: Duplicate['sameMessageId'] =
        first.messageId === undefined || repeat.messageId === undefined ? 'missing' : first.messageId === repeat.messageId;
      const kill = workerKills.find((k) => k.at >= first.at && k.at <= repeat.at && k.at - first.at <= killWindowMs);
      const before = [...faults].reverse().find((f) => f.injectedAt <= first.at);
      const gap = `repeat ${round((repeat.at - first.at) / 1000, 1)} s after the first copy`;
      let explanation: string;
      let allowed = false;
      if (kill && sameMessageId !== false) {
        allowed = true;
        explanation = `worker killed -9 ${round(kill.at - first.at, 0)} ms after the first copy was accepted (before its record)${
          sameMessageId === 'missing' ? '; Message-ID missing, sameness not checked' : ', same Message-ID'
        }`;
      } else if (kill) {
        explanation = `worker killed -9 ${round(kill.at - first.at, 0)} ms after the first copy, but the repeat has a different Message-ID (a new send, not a repeat)`;
      } else {
        explanation = `no worker kill between the copies (${gap}); last fault injected before the first copy: ${
          before
            ? `${before.name} (${round((first.at - before.injectedAt) / 1000, 1)} s before it${before.recoveredAt >= first.at ? ', still on' : ''})`
            : 'none'
        }; Message-ID ${sameMessageId === 'missing' ? 'missing' : sameMessageId ? 'same' : 'different'}`;
      }
      duplicates.push({
        recipient,
        kind,
        copies: copies.length,
        firstAt: round(first.at, 0),
        repeatAt: round(repeat.at, 0),
        sameMessageId,
        explanation,
        allowed,
      });
      if (kind !== 'unknown') {
        summaries[kind].duplicates += 1;
        if (allowed) summaries[kind].duplicatesAllowed += 1;
      }
    }
  }
  return { summaries: [summaries.verification, summaries.tracking], lost, duplicates, unpromised };
}

/**
 * ms after `at` when every email promised by a 2xx answered before `at` had been accepted (its first copy):
 * the backlog a fault left behind has drained. Undefined when one of them never arrived (lost).
 */
export function backlogDrainedAfter(
  expected: Map<string, Expectation>,
  received: Map<string, ReceivedCopy[]>,
  at: number,
): number | undefined {
  let last = at;
  for (const [recipient, expectation] of expected) {
    if (expectation.answeredAt === undefined || expectation.answeredAt > at) continue;
    const copies = received.get(recipient);
    if (!copies) return undefined;
    if (copies[0].at > last) last = copies[0].at;
  }
  return round(last - at, 0);
}

/** Emails promised (2xx) and not yet accepted: the backlog the drain waits for. */
export function outstanding(expected: Map<string, Expectation>, received: Map<string, ReceivedCopy[]>): number {
  let count = 0;
  for (const recipient of expected.keys()) if (!received.has(recipient)) count += 1;
  return count;
}

/** Least-squares slope of y over x (per unit of x), for drift. */
export function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}
