import t from 'tap';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  REDIS_URL,
  REPO_ROOT,
  freePort,
  freshDatabaseUrl,
  freshQueuePrefix,
  spawnErrand,
  startSmtpServer,
  waitFor,
} from '../support/helpers.js';

// A build on a shared 2-core machine: allow minutes, not seconds.
t.setTimeout(300_000);

const run = promisify(execFile);

interface RuntimeStage {
  env: Record<string, string>;
  runs: string[];
  copies: { from?: string; source: string; destination: string }[];
  cmd: string[];
  healthcheck: string[];
}

/** The last stage of a Dockerfile, read instruction by instruction (continuations joined; exec-form CMDs). */
function runtimeStage(dockerfile: string): RuntimeStage {
  const lines = dockerfile
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const stage = lines.slice(lines.findLastIndex((line) => /^FROM\s/i.test(line)) + 1);
  const result: RuntimeStage = { env: {}, runs: [], copies: [], cmd: [], healthcheck: [] };
  for (const line of stage) {
    const [, keyword = '', rest = ''] = /^(\w+)\s+(.*)$/.exec(line) ?? [];
    switch (keyword.toUpperCase()) {
      case 'ENV':
        for (const [, key, value] of rest.matchAll(/(\w+)=(\S+)/g)) result.env[key] = value!;
        break;
      case 'RUN':
        result.runs.push(rest);
        break;
      case 'COPY': {
        const from = /--from=(\S+)/.exec(rest)?.[1];
        const paths = rest.split(/\s+/).filter((part) => !part.startsWith('--'));
        const destination = paths.pop()!;
        for (const source of paths)
          result.copies.push({ from, source, destination: paths.length > 1 ? path.join(destination, path.basename(source)) : destination });
        break;
      }
      case 'CMD':
        result.cmd = JSON.parse(rest) as string[];
        break;
      case 'HEALTHCHECK':
        result.healthcheck = JSON.parse(rest.slice(rest.indexOf('CMD') + 3).trim()) as string[];
        break;
    }
  }
  return result;
}

/**
 * node_modules holding only the production packages, as `npm ci --omit=dev` would install them: every
 * top-level package the lockfile does not mark dev (or devOptional), linked from this checkout's install.
 * dist/ resolves its imports from here, so importing a devDependency at run time fails just as in the image —
 * without a minute of `npm ci` per test run. (Whether the lockfile installs at all is `npm ci`'s own check,
 * run by every checkout.)
 */
async function linkProductionDependencies(dir: string): Promise<string[]> {
  const lock = JSON.parse(await readFile(path.join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
  };
  const production = Object.entries(lock.packages)
    .filter(([key, entry]) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(key) && !entry.dev && !entry.devOptional)
    .map(([key]) => key.slice('node_modules/'.length));
  for (const name of production) {
    const target = path.join(REPO_ROOT, 'node_modules', name);
    const link = path.join(dir, 'node_modules', name);
    await mkdir(path.dirname(link), { recursive: true });
    // Optional platform packages (other CPUs) were never installed here.
    await symlink(target, link, 'dir').catch(() => {});
  }
  return production;
}

t.test(
  "the Dockerfile's runtime stage, without Docker: its files, env, production dependencies, CMD and HEALTHCHECK, as api and as worker",
  async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), 'errand-prod-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const runtime = runtimeStage(await readFile(path.join(REPO_ROOT, 'Dockerfile'), 'utf8'));
    t.ok(
      runtime.runs.some((line) => /\bnpm ci\b.*--omit=dev/.test(line)),
      'the image installs production dependencies only (reproduced below)',
    );
    t.ok(
      runtime.runs.some((line) => /\bnpm run build\b/.test(line)) || runtime.copies.some((c) => c.from === 'build'),
      'dist/ comes from the build',
    );

    // The real build script (the build stage's `npm run build`), written to the temp dir so a working tree's dist/ is
    // left alone. --noCheck: the same bundle, without type checking the tree a second time (`npm run check` runs
    // `tsc --noEmit` over src/ and everything else; that is ~25 s of CPU this test need not repeat).
    const built = path.join(dir, '.build');
    await run('npm', ['run', 'build', '--', '--outDir', built, '--noCheck'], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
    const builtFiles = await readdir(built);
    t.ok(
      builtFiles.includes('main.js') && builtFiles.includes('chunks') && !builtFiles.includes('core'),
      'dist/ is a bundle, not a file per source',
    );
    // Lay out the runtime stage's COPY lines: build-stage /app/dist is our build, the rest comes from the checkout.
    for (const copy of runtime.copies) {
      const source = copy.from === 'build' ? (copy.source === '/app/dist' ? built : undefined) : path.join(REPO_ROOT, copy.source);
      if (!source) throw new Error(`unexpected COPY --from=build ${copy.source}`);
      await cp(source, path.join(dir, copy.destination.replace(/^\.\/?/, '') || path.basename(copy.source)), { recursive: true });
    }
    const production = await linkProductionDependencies(dir);
    t.ok(production.includes('fastify') && !production.includes('typescript') && !production.includes('tap'), 'devDependencies left out');
    const [command, ...args] = runtime.cmd;
    t.equal(command, 'node', 'CMD runs node');

    const smtp = await startSmtpServer(t);
    const env = {
      ...runtime.env,
      PORT: '0',
      // Not created: both roles create and migrate it at once, which must be safe.
      DATABASE_URL: freshDatabaseUrl(t, { create: false }),
      REDIS_URL,
      QUEUE_PREFIX: freshQueuePrefix(t),
      // Production refuses short or default secrets, an http:// base URL and no SMTP_URL (CONTRACT.md).
      PAYMENT_WEBHOOK_SECRET: 'production-test-webhook-secret-0123456789',
      LINK_SECRET: 'production-test-link-secret-0123456789abc',
      PUBLIC_BASE_URL: 'https://errand.example.com',
      SMTP_URL: smtp.url,
      MAIL_DIR: path.join(dir, 'var/mail'),
      EMAIL_RATE_DURATION_MS: '10',
      LOG_LEVEL: 'info',
    };
    // Both at once: concurrent database creation and migration must be safe.
    const [api, worker] = await Promise.all(
      (['api', 'worker'] as const).map((role) =>
        spawnErrand(t, { ...env, ROLE: role }, { command: process.execPath, args, cwd: dir, readyTimeoutMs: 60000 }),
      ),
    );
    const [apiPort, workerPort] = [api.port, worker.port];
    t.pass('both roles ready');

    // The split end to end: the api publishes, the worker delivers.
    const signup = await fetch(`http://127.0.0.1:${apiPort}/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'prod@example.com' }),
    });
    t.equal(signup.status, 202);
    await signup.arrayBuffer();
    const workerSignup = await fetch(`http://127.0.0.1:${workerPort}/auth/signup`, { method: 'POST' });
    t.equal(workerSignup.status, 404, 'the worker serves no public routes');
    await workerSignup.arrayBuffer();
    const [email] = await smtp.waitForEmails(1, 60000);
    t.same(email.to, ['prod@example.com']);
    // The email arrives before the worker records the job as completed (sent_emails, then the completed event).
    const completed = /errand_jobs_completed_total\{queue="email",name="email-verification"\} 1/;
    const metrics = await waitFor(
      async () => {
        const text = await (await fetch(`http://127.0.0.1:${workerPort}/metrics`)).text();
        return completed.test(text) ? text : undefined;
      },
      15000,
      'the completed counter',
    ).catch(async () => (await fetch(`http://127.0.0.1:${workerPort}/metrics`)).text());
    t.match(metrics, completed);

    // The image's HEALTHCHECK command, run as Docker would (same env, PORT of the running process).
    const [checkCommand, ...checkArgs] = runtime.healthcheck;
    t.equal(checkCommand, 'node');
    const check = await run(process.execPath, checkArgs, { cwd: dir, env: { ...process.env, ...runtime.env, PORT: String(apiPort) } }).then(
      () => 0,
      (error: { code?: number }) => error.code ?? 1,
    );
    t.equal(check, 0, 'HEALTHCHECK passes against the running api');
    const failing = await run(process.execPath, checkArgs, {
      cwd: dir,
      env: { ...process.env, ...runtime.env, PORT: String(await freePort()) },
    }).then(
      () => 0,
      (error: { code?: number }) => error.code ?? 1,
    );
    t.equal(failing, 1, 'HEALTHCHECK fails when nothing answers');

    for (const [role, errand] of [
      ['api', api],
      ['worker', worker],
    ] as const) {
      errand.child.kill('SIGTERM');
      const exit = await errand.exited;
      t.same(exit, { code: 0, signal: null }, `${role} exits 0 on SIGTERM`);
    }
  },
);
