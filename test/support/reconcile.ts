import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import type { Db, OrderStatus } from '../../src/core/db.js';
import { ProviderSimulator, type RunningSimulator } from '../../src/reconcile/simulator.js';
import { waitFor } from './helpers.js';

type Teardown = (fn: () => unknown) => void;
interface T {
  teardown: Teardown;
}

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The provider simulator as a real HTTP server on a free port, closed at teardown. */
export async function startSimulator(t: T): Promise<{ sim: ProviderSimulator; server: RunningSimulator; url: string }> {
  const sim = new ProviderSimulator();
  const server = await sim.listen({ port: 0 });
  t.teardown(() => server.close());
  return { sim, server, url: server.url };
}

export interface TestOrder {
  id: string;
  providerRef: string;
  email: string;
  amount: number;
  currency: string;
  status: OrderStatus;
  createdAt: Date;
}

/** Inserts orders directly (fast, with chosen created_at); returned in input order. */
export async function insertOrders(
  db: Db,
  rows: Array<{ ageMinutes: number; status?: OrderStatus; amount?: number; currency?: string; email?: string }>,
): Promise<TestOrder[]> {
  if (rows.length === 0) return [];
  const now = Date.now();
  const values = rows.map((row) => {
    const tag = randomBytes(8).toString('hex');
    return {
      email: row.email ?? `buyer-${tag}@example.com`,
      amount: row.amount ?? 1999,
      currency: row.currency ?? 'USD',
      status: row.status ?? ('pending' as const),
      provider_ref: `pay_${tag}`,
      created_at: new Date(now - row.ageMinutes * 60_000),
      paid_at: row.status === 'paid' ? new Date(now) : null,
    };
  });
  const inserted = await db.insertInto('orders').values(values).returning(['id', 'provider_ref']).execute();
  const idByRef = new Map(inserted.map((row) => [row.provider_ref, row.id]));
  return values.map((v) => ({
    id: idByRef.get(v.provider_ref)!,
    providerRef: v.provider_ref,
    email: v.email,
    amount: v.amount,
    currency: v.currency,
    status: v.status,
    createdAt: v.created_at,
  }));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function childEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, ...env };
}

export interface ChildErrand {
  child: ChildProcess;
  baseUrl: string;
  stdout: string[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  logLines(): Record<string, unknown>[];
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node --import tsx src/main.ts` as a real child process, waited on until /readyz answers 200; killed at teardown. */
export async function spawnErrand(t: T, env: Record<string, string | undefined>): Promise<ChildErrand> {
  const port = env.PORT ?? String(await freePort());
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: REPO_ROOT, env: childEnv({ ...env, PORT: port }), stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  let partial = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop()!;
    stdout.push(...lines.filter(Boolean));
  });
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(...chunk.toString().split('\n').filter(Boolean)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const handle: ChildErrand = {
    child,
    baseUrl: `http://127.0.0.1:${port}`,
    stdout,
    stderr,
    exited,
    logLines: () =>
      stdout.flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      }),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`errand exited early: ${stderr.join('\n')}`);
      try {
        const res = await fetch(`${handle.baseUrl}/readyz`);
        await res.body?.cancel();
        return res.status === 200 || undefined;
      } catch {
        return undefined;
      }
    },
    60000,
    'errand /readyz',
  ).catch((error: Error) => {
    throw new Error(`${error.message}; stderr: ${stderr.slice(-5).join(' | ')}; stdout: ${stdout.slice(-3).join(' | ')}`);
  });
  return handle;
}

export interface ScriptResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a script under scripts/ as its own process with exactly `env`. */
export function runScript(script: string, args: string[], env: Record<string, string | undefined>, timeoutMs = 60000): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', `scripts/${script}`, ...args], { cwd: REPO_ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`scripts/${script} ${args.join(' ')} did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
