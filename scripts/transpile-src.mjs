// src/*.ts → plain JavaScript, file for file as tsc emits it (relative imports already name the .js files), by
// esbuild: well under a second, no type check. Used by `npm start` (into dist/) and by the tests that spawn an
// errand (into a per-run folder). The output folder must sit one level below the repository root, like dist/,
// so that migrations/ and package.json are found as from dist/.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { build, buildSync } from 'esbuild';

/** The TypeScript sources under `<root>/src`, relative to it, sorted. */
export function srcFiles(root) {
  return readdirSync(path.join(root, 'src'), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
    .sort();
}

function options(root, outdir) {
  const srcDir = path.join(root, 'src');
  return {
    entryPoints: srcFiles(root).map((file) => path.join(srcDir, file)),
    outdir,
    outbase: srcDir,
    bundle: false,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    sourcemap: 'linked',
    logLevel: 'warning',
  };
}

export async function transpileSrc(root, outdir) {
  await build(options(root, outdir));
}

export function transpileSrcSync(root, outdir) {
  buildSync(options(root, outdir));
}
