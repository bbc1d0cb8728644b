// TypeScript → plain JavaScript, file for file as tsc emits it (relative imports already name the .js files), by
// esbuild: well under a second, no type check (that is `tsc --noEmit`'s job).
// - src/ alone, by `npm start` (into dist/) and by the tests that spawn an errand (into a per-run folder). The
//   output folder must sit one level below the repository root, like dist/, so that migrations/ and package.json
//   are found as from dist/.
// - src/, scripts/ and test/ together, by `npm test` (into .test-build/, see transpileForTests).
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

function srcOptions(root, outdir) {
  const srcDir = path.join(root, 'src');
  return options(
    srcFiles(root).map((file) => path.join(srcDir, file)),
    srcDir,
    outdir,
  );
}

export async function transpileSrc(root, outdir) {
  await build(srcOptions(root, outdir));
}

export function transpileSrcSync(root, outdir) {
  buildSync(srcOptions(root, outdir));
}

/** Where `npm test` runs the test files from, relative to the repository root. */
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
