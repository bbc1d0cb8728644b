// TypeScript → plain JavaScript by esbuild, file for file (relative imports already name the .js files) or bundled:
// a few seconds at most, no type check (that is `tsc --noEmit`'s job).
// - src/ alone, by test files run by hand that spawn an errand (into a per-run folder one level below the root).
// - src/, scripts/ and test/ together, by `npm run test:coverage` (into .test-build/, see transpileForTests).
// - bundled, by `npm test`: the test files (into .test-bundle/, see bundleTests), errand's entry point and the
//   scripts the tests spawn (into .test-main/, see bundleMainForTests).
// - bundled, by `npm run build` and `npm start`: errand itself (into dist/, see bundleErrand).
import { cpSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { build, buildSync } from 'esbuild';

/** The TypeScript sources under `<root>/<dir>`, relative to it, sorted. */
function tsFiles(root, dir) {
  return readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
    .sort();
}

/** The TypeScript sources under `<root>/src`, relative to it, sorted. */
export function srcFiles(root) {
  return tsFiles(root, 'src');
}

function options(entryPoints, outbase, outdir) {
  return {
    entryPoints,
    outdir,
    outbase,
    bundle: false,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: 'linked',
    logLevel: 'warning',
  };
}

export function transpileSrcSync(root, outdir) {
  const srcDir = path.join(root, 'src');
  buildSync(
    options(
      srcFiles(root).map((file) => path.join(srcDir, file)),
      srcDir,
      outdir,
    ),
  );
}

/** Where `npm run test:coverage` runs the test files from (transpiled), relative to the repository root. */
export const TEST_BUILD_DIR = '.test-build';

const TEST_BUILD_SOURCES = ['src', 'scripts', 'test'];

/**
 * src/, scripts/ and test/ → `<root>/.test-build/{src,scripts,test}`, rebuilt from scratch. tap then runs plain
 * JavaScript: no TypeScript loader in any test process (tsx's loader thread cost about 2.3 s of CPU per test
 * file that imports errand, more than the rest of a small file's work). The plain .mjs helpers under scripts/
 * are copied as they are; migrations/ and package.json are linked in, so the compiled src/ finds them one
 * level above itself as it does in the checkout.
 */
export function transpileForTests(root) {
  const outdir = path.join(root, TEST_BUILD_DIR);
  rmSync(outdir, { recursive: true, force: true });
  const entryPoints = TEST_BUILD_SOURCES.flatMap((dir) => tsFiles(root, dir).map((file) => path.join(root, dir, file)));
  buildSync(options(entryPoints, root, outdir));
  for (const file of readdirSync(path.join(root, 'scripts')).filter((name) => name.endsWith('.mjs')))
    cpSync(path.join(root, 'scripts', file), path.join(outdir, 'scripts', file));
  for (const name of ['migrations', 'package.json']) symlinkSync(path.join('..', name), path.join(outdir, name));
  return outdir;
}

/** Where `npm test` runs the test files from (bundled), relative to the repository root. */
export const TEST_BUNDLE_DIR = '.test-bundle';

/**
 * Loaded as they are, not bundled: tap (its plugins load by path), the browser driver and the build tools, the
 * Swagger UI (it reads its static files next to its own code), and OpenTelemetry (its instrumentations hook
 * `require`, and a test checks which of its modules are loaded).
 */
const TEST_BUNDLE_EXTERNAL = [
  'tap',
  '@tapjs/*',
  'playwright-core',
  '@axe-core/playwright',
  'esbuild',
  'typescript',
  '@fastify/swagger',
  '@fastify/swagger-ui',
  '@opentelemetry/*',
  '@fastify/otel',
  'bullmq-otel',
  'pg-native',
];

/** `require`, `__filename` and `__dirname` for the CommonJS packages inside a bundled ES module. */
const COMMONJS_GLOBALS = [
  "import { createRequire as __bundleCreateRequire } from 'node:module';",
  "import { fileURLToPath as __bundleFileURLToPath } from 'node:url';",
  'const require = __bundleCreateRequire(import.meta.url);',
  'const __filename = __bundleFileURLToPath(import.meta.url);',
  "const __dirname = __filename.slice(0, __filename.lastIndexOf('/'));",
].join(' ');

/**
 * Bundled with their packages (except `external`), shared and lazily loaded code split into `<outdir>/chunks/`;
 * source maps point at the files on disk (stack traces name src/ and test/ lines) without copying them in.
 */
async function bundle(entryPoints, outbase, outdir, external, extra = {}) {
  rmSync(outdir, { recursive: true, force: true });
  await build({
    ...options(entryPoints, outbase, outdir),
    ...extra,
    bundle: true,
    splitting: true,
    chunkNames: 'chunks/[name]-[hash]',
    sourcesContent: false,
    external,
    banner: { js: COMMONJS_GLOBALS },
  });
}

/**
 * Whitespace and syntax minified, identifiers kept (stack traces keep function names; the source maps lead back to
 * the TypeScript): less source for V8 to read in every test process and every errand a test spawns.
 */
const MINIFIED = { minifyWhitespace: true, minifySyntax: true };

/**
 * test/**\/*.test.ts → `<root>/.test-bundle/<dir>/<file>.test.js`, bundled with src/ and the packages they use, the
 * shared code split into `.test-bundle/chunks/` (so one copy of each module per process, as without a bundle).
 * A test process then reads a handful of files instead of ~900 modules, whose resolution and loading were about
 * half of a small test file's CPU on Node 20.
 */
export async function bundleTests(root) {
  const testDir = path.join(root, 'test');
  const entryPoints = tsFiles(root, 'test')
    .filter((file) => file.endsWith('.test.ts'))
    .map((file) => path.join(testDir, file));
  await bundle(entryPoints, testDir, path.join(root, TEST_BUNDLE_DIR), TEST_BUNDLE_EXTERNAL, {
    ...MINIFIED,
    plugins: [tapPerFile(path.join(testDir, 'support', 'tap-per-file.ts'))],
  });
}

/**
 * A test file's `import t from 'tap'` → test/support/tap-per-file.ts, so that several files can share a process
 * (npm-test.js groups them), each in a subtest of its own. Only the test files' own imports: the stand-in and the
 * helpers (the exit watchdog watches the real root) still get tap itself.
 */
function tapPerFile(standIn) {
  return {
    name: 'tap-per-file',
    setup(build) {
      build.onResolve({ filter: /^tap$/ }, (args) => (args.importer.endsWith('.test.ts') ? { path: standIn } : undefined));
    },
  };
}

/** errand's own bundles keep pg and ioredis separate too: with tracing on, OpenTelemetry hooks their loading. */
const ERRAND_EXTERNAL = [...TEST_BUNDLE_EXTERNAL, 'pg', 'ioredis'];

/** Where `npm test` puts errand's entry point and the scripts bundled: `<root>/.test-main/{src/main.js,scripts/*.js}`. */
export const TEST_MAIN_DIR = '.test-main';

/**
 * src/main.ts and scripts/*.ts bundled with their packages, for the tests that spawn errand or a script: ~1 s
 * less CPU per spawned process than transpiled files (far fewer modules to load).
 */
export async function bundleMainForTests(root) {
  const entryPoints = [path.join(root, 'src', 'main.ts'), ...tsFiles(root, 'scripts').map((file) => path.join(root, 'scripts', file))];
  await bundle(entryPoints, root, path.join(root, TEST_MAIN_DIR), ERRAND_EXTERNAL, MINIFIED);
}

/**
 * errand for production (`npm run build`, `npm start`): src/main.ts bundled with its packages into
 * `<outdir>/main.js`, shared and lazily loaded code in `<outdir>/chunks/`. Node 20 then loads a handful of files at
 * start instead of ~900 modules (ready in 0.8–1.1 s instead of ~1.5 s on this machine). Left as separate packages:
 * pg and ioredis (with tracing on, OpenTelemetry instruments them by hooking their loading), OpenTelemetry itself,
 * and the Swagger UI (it reads its static files next to its own code): the image installs them as before.
 * Whitespace and syntax are minified (not identifiers: stack traces keep function names, and the linked source
 * maps lead back to src/): 5 MB less source for V8 to read, ready in ~715 ms instead of ~805 ms (median of 8 each).
 */
export async function bundleErrand(root, outdir) {
  const srcDir = path.join(root, 'src');
  await bundle([path.join(srcDir, 'main.ts')], srcDir, outdir, ERRAND_EXTERNAL, { minifyWhitespace: true, minifySyntax: true });
}
