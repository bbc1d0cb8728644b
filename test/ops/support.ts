import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

export interface ChildErrand {
  child: ChildProcess;
  /** stdout lines so far. */
  lines: string[];
  /** Resolves with the port once Fastify logs that it listens. */
  port: Promise<number>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns an errand process; `PORT=0` in `env` and the port is read from its log. */
export function spawnErrand(command: string, args: string[], env: Record<string, string | undefined>, cwd: string): ChildErrand {
  const child = spawn(command, args, { cwd, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let resolvePort!: (port: number) => void;
  let rejectPort!: (error: Error) => void;
  const port = new Promise<number>((resolve, reject) => {
    resolvePort = resolve;
    rejectPort = reject;
  });
  port.catch(() => {});
  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      const listening = /Server listening at http:\/\/[^"]*:(\d+)/.exec(line);
      if (listening) resolvePort(Number(listening[1]));
    }
  });
  const stderr: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString('utf8')));
  const exit = once(child, 'exit').then(([code, signal]) => {
    rejectPort(new Error(`process exited (${code ?? signal}) before listening: ${stderr.join('').slice(-2000)} ${lines.slice(-5).join('\n')}`));
    return { code: code as number | null, signal: signal as NodeJS.Signals | null };
  });
  return { child, lines, port, exit };
}

/** Kills a child still running at teardown. */
export function killAtTeardown(t: { teardown(fn: () => unknown): void }, errand: ChildErrand): void {
  t.teardown(async () => {
    if (errand.child.exitCode === null && errand.child.signalCode === null) {
      errand.child.kill('SIGKILL');
      await errand.exit;
    }
  });
}
