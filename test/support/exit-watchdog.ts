// A test file whose tests are all done but whose process stays up (a connection, server, timer or child that nothing
// closed) would otherwise run until npm test's per-file limit (180 s) and fail there with no word of why. Imported
// by helpers.ts, so every file that starts services has it: once tap's root test has ended, the process gets
// EXIT_GRACE_MS to exit; then it names what still holds it open and kills itself, failing the file.
// Under npm test tap serializes stdio for node:test, and once its root test has ended a write to process.stderr
// throws and process.exit() does not end the process (seen): hence a direct write to fd 2 and SIGKILL.
import { writeSync } from 'node:fs';
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import type { Server, Socket } from 'node:net';

/** Closing what a file started (pools, servers, Redis clients, children) takes a few seconds at most, also under load. */
const EXIT_GRACE_MS = Number(process.env.TEST_EXIT_GRACE_MS ?? 20_000);

/** What one handle is, in words: a socket's peer, a server's port, a child's command. */
function describeHandle(handle: unknown): string {
  const name = (handle as object | null)?.constructor?.name ?? typeof handle;
  if (name === 'Socket' || name === 'TLSSocket') {
    const socket = handle as Socket;
    if (socket.remotePort !== undefined) return `${name} to ${socket.remoteAddress}:${socket.remotePort}`;
    return `${name} (not connected${socket.connecting ? ', connecting' : ''})`;
  }
  if (name === 'Server') {
    const address = (handle as Server).address();
    return `Server on ${typeof address === 'object' && address ? address.port : address}`;
  }
  if (name === 'ChildProcess') {
    const child = handle as ChildProcess;
    return `ChildProcess ${child.spawnfile} (pid ${child.pid})`;
  }
  return name;
}

/** `_getActiveHandles` is undocumented but long-standing; `getActiveResourcesInfo` only gives type names. */
function openHandles(): string {
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  const described = handles.map(describeHandle).filter((what) => what !== 'WriteStream' && what !== 'ReadStream');
  const timers = process.getActiveResourcesInfo().filter((type) => type === 'Timeout').length;
  return [...described, ...(timers ? [`${timers} timer(s)`] : [])].join('; ') || 'nothing this process can name';
}

t.teardown(() => {
  setTimeout(() => {
    writeSync(2, `# every test ended ${EXIT_GRACE_MS / 1000} s ago but the process is still up; open: ${openHandles()}\n`);
    process.kill(process.pid, 'SIGKILL');
  }, EXIT_GRACE_MS).unref();
});
