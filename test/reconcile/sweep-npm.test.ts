import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { childEnv, REPO_ROOT, testEnv } from '../support/helpers.js';

// The contract's exact command line: `npm run sweep -- …` must leave one JSON line on stdout (see .npmrc).
t.test('`npm run sweep -- --dry-run` prints exactly one JSON summary line on stdout', async (t) => {
  const env = testEnv(t);
  const { stdout } = await promisify(execFile)('npm', ['run', 'sweep', '--', '--dry-run', '--window', '2h', '--limit', '10'], {
    cwd: REPO_ROOT,
    env: childEnv(env),
    timeout: 120000,
  });
  const lines = stdout.split('\n').filter(Boolean);
  t.equal(lines.length, 1, `one line on stdout: ${JSON.stringify(stdout.slice(0, 200))}`);
  t.same(Object.keys(JSON.parse(lines[0])).sort(), ['checked', 'durationMs', 'errors', 'expired', 'failed', 'paid', 'unchanged']);
});
