// The exit watchdog (test/support/exit-watchdog.ts): a file whose tests pass but whose process stays up fails in
// seconds, naming what holds it, instead of running to npm test's 180 s per-file limit.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import '../support/helpers.js';

if (process.env.WATCHDOG_LEAKY_CHILD) {
  // This same file, run again as the child below: its test passes and leaves a server listening.
  t.test('passes but leaves a server listening', async (t) => {
    createServer().listen(0, '127.0.0.1');
    t.pass('done');
  });
} else {
  t.test('a file that leaves a server listening fails after the grace, naming it', async (t) => {
    const started = Date.now();
    // This module's own file, not process.argv[1]: under npm test that is the group of files this one runs in.
    const child = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url)], {
      env: { ...process.env, WATCHDOG_LEAKY_CHILD: '1', TEST_EXIT_GRACE_MS: '500', NODE_TEST_CONTEXT: '' },
      encoding: 'utf8',
      timeout: 30000,
    });
    const seconds = (Date.now() - started) / 1000;
    t.match(child.stdout, /ok 1 - passes but leaves a server listening/, 'its test passed');
    t.equal(child.signal, 'SIGKILL', 'the watchdog ended the process');
    t.match(child.stderr, /every test ended 0\.5 s ago but the process is still up; open: .*Server on \d+/, 'naming the server');
    t.ok(seconds < 20, `within seconds (${seconds.toFixed(1)} s), not at the file limit`);
  });
}
