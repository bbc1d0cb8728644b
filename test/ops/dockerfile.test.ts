import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../support/helpers.js';

t.test('the Dockerfile lints clean', async (t) => {
  // dockerfile-utils exits 0 even with warnings: any output is a finding.
  const { stdout, stderr } = await promisify(execFile)('npx', ['--no-install', 'dockerfile-utils', 'lint', 'Dockerfile'], { cwd: REPO_ROOT });
  t.equal(stdout.trim(), '', 'no lint output');
  t.equal(stderr.trim(), '', 'no lint errors');
});

t.test('the Dockerfile keeps the production conventions', async (t) => {
  const text = await readFile(new URL('../../Dockerfile', import.meta.url), 'utf8');
  t.match(text, /^FROM node:\S+ AS build$/m, 'build stage');
  t.match(text, /RUN npm run build/);
  t.match(text, /npm ci --omit=dev/, 'runtime installs production dependencies only');
  t.match(text, /^USER node$/m, 'non-root');
  t.match(text, /HOST=0\.0\.0\.0/);
  t.match(text, /^HEALTHCHECK .*\n?.*\/healthz/m);
  t.match(text, /COPY migrations \.\/migrations/, 'migrations next to dist');
  t.match(text, /^CMD \["node", "dist\/main\.js"\]$/m);
});
