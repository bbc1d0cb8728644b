import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../support/helpers.js';

t.test('the Dockerfile lints clean', async (t) => {
  // dockerfile-utils exits 0 even with warnings: any output is a finding.
  const { stdout, stderr } = await promisify(execFile)('npx', ['--no-install', 'dockerfile-utils', 'lint', 'Dockerfile'], {
    cwd: REPO_ROOT,
  });
  t.equal(stdout.trim(), '', 'no lint output');
  t.equal(stderr.trim(), '', 'no lint errors');
});

// What the runtime stage does (its files, env, production-only dependencies, CMD and HEALTHCHECK) is run, not
// read, by test/ops/production-build.test.ts. Only the user cannot be exercised without a Docker daemon.
t.test('the runtime stage runs as the unprivileged node user', async (t) => {
  const text = await readFile(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const runtime = text.slice(text.lastIndexOf('\nFROM '));
  const users = [...runtime.matchAll(/^USER\s+(\S+)\s*$/gm)].map((match) => match[1]);
  t.same(users, ['node'], 'one USER instruction in the last stage: node');
});
