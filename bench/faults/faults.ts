// The faults the run injects, one after another, each held for a few seconds and then recovered.
import pg from 'pg';
import { sleep } from '../lib.js';
import type { KillEvent } from './analysis.js';
import type { Stack } from './stack.js';

export interface FaultContext {
  stack: Stack;
  holdMs: number;
  kills: KillEvent[];
  /** Free-form facts about what the injection did (rows terminated, ...), reported beside the fault. */
  notes: string[];
}

export interface Fault {
  name: string;
  /** What is done to errand's world. */
  does: string;
  /** What errand is expected to do (the contract's promise). */
  expect: string;
  /** Injects, holds for `holdMs` (or as long as the fault takes), and recovers. Resolves when recovered. */
  run(ctx: FaultContext): Promise<void>;
}

async function terminateBackends(stack: Stack): Promise<number> {
  return stack.withDb(async (client) => {
    const { rows } = await client.query<{ terminated: boolean }>(
      'select pg_terminate_backend(pid) as terminated from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()',
      [stack.databaseName],
    );
    return rows.filter((row) => row.terminated).length;
  });
}

export const FAULTS: Fault[] = [
  {
    name: 'redis-oom',
    does: 'CONFIG SET maxmemory 1 (policy noeviction): every write is refused with OOM while the connection stays up',
    expect:
      'signups and webhooks still answer 2xx within a second (outbox rows committed); the relay keeps the rows and publishes them once writes are accepted again',
    async run({ stack, holdMs }) {
      await stack.redisAdmin.config('SET', 'maxmemory', '1');
      try {
        await sleep(holdMs);
      } finally {
        await stack.redisAdmin.config('SET', 'maxmemory', '0');
      }
    },
  },
  {
    name: 'redis-pause-write',
    does: 'CLIENT PAUSE <hold> WRITE: Redis connected, every write waits until the pause ends',
    expect: 'requests answer 2xx within a second (the publish after commit has a deadline); the relay publishes after the pause',
    async run({ stack, holdMs }) {
      await stack.redisAdmin.call('CLIENT', 'PAUSE', String(holdMs), 'WRITE');
      await sleep(holdMs);
      await stack.redisAdmin.call('CLIENT', 'UNPAUSE').catch(() => {});
    },
  },
  {
    name: 'redis-restart',
    does: 'kill -9 of redis-server, down for <hold>, started again on the same port with no data (nothing on disk)',
    expect:
      'requests answer 2xx meanwhile; every job that was only in Redis is published again from the outbox (republish on ready); sends already recorded are not repeated',
    async run({ stack, holdMs }) {
      await stack.redis.kill();
      await sleep(holdMs);
      await stack.redis.start();
    },
  },
  {
    name: 'pg-terminate',
    does: "pg_terminate_backend of every connection to errand's database, every second for <hold>",
    expect: 'requests in flight may answer 503 (nothing written) or 2xx; pools reconnect; no 2xx loses its email; no email is sent twice',
    async run({ stack, holdMs, notes }) {
      const end = stack.clock() + holdMs;
      let terminated = 0;
      while (stack.clock() < end) {
        terminated += await terminateBackends(stack).catch(() => 0);
        await sleep(1000);
      }
      notes.push(`${terminated} backends terminated`);
    },
  },
  {
    name: 'pg-lock',
    does: 'LOCK TABLE users, orders IN ACCESS EXCLUSIVE MODE held in a transaction for <hold> (a slow PostgreSQL)',
    expect: 'requests wait (latency up to the hold) and then answer; no statement storm; emails whose record waits are not resent',
    async run({ stack, holdMs }) {
      const client = new pg.Client({ connectionString: stack.databaseUrl });
      client.on('error', () => {});
      await client.connect();
      try {
        await client.query('begin');
        await client.query('lock table users, orders in access exclusive mode');
        await sleep(holdMs);
        await client.query('commit');
      } finally {
        await client.end().catch(() => {});
      }
    },
  },
  {
    name: 'smtp-outage',
    does: 'the SMTP server stops listening and drops its connections (421): connections refused for <hold>',
    expect: 'the email queue pauses without spending attempts; every email goes out once SMTP is back',
    async run({ stack, holdMs }) {
      await stack.smtp.down();
      try {
        await sleep(holdMs);
      } finally {
        await stack.smtp.up();
      }
    },
  },
  {
    name: 'smtp-451',
    does: 'the SMTP server answers every DATA with 451 4.3.0 for <hold>',
    expect: 'each message is retried with the backoff (JOB_BACKOFF_MS) and goes out afterwards; none is lost or sent twice',
    async run({ stack, holdMs }) {
      stack.smtp.setMode('reject-451');
      try {
        await sleep(holdMs);
      } finally {
        stack.smtp.setMode('accept');
      }
    },
  },
  {
    name: 'kill-worker',
    does: 'kill -9 of the worker process mid-flight, restarted after <kill down>',
    expect:
      'active jobs stall and are picked up again by the restarted worker; an email accepted by SMTP but not yet recorded may be repeated, with the same Message-ID',
    async run({ stack, kills }) {
      kills.push({ role: 'worker', at: stack.clock() });
      await stack.worker.kill9();
      await sleep(KILL_DOWN_MS);
      await stack.worker.restart();
    },
  },
  {
    name: 'kill-api',
    does: 'kill -9 of the api process mid-flight, restarted after <kill down>',
    expect:
      'requests in flight fail (no answer); a committed request whose publish was cut off is published by the relay; no 2xx loses its email',
    async run({ stack, kills }) {
      kills.push({ role: 'api', at: stack.clock() });
      await stack.api.kill9();
      await sleep(KILL_DOWN_MS);
      await stack.api.restart();
    },
  },
];

/** How long a killed process stays down before it is started again (FAULTS_KILL_DOWN_S). */
export let KILL_DOWN_MS = 1000;
export function setKillDownMs(ms: number): void {
  KILL_DOWN_MS = ms;
}
