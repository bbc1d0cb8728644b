// `npm run build`: type-checks src/ with tsc (tsconfig.build.json), then writes dist/: src/main.ts bundled with its
// packages by esbuild (scripts/transpile-src.mjs, bundleErrand). `node dist/main.js` is what the image runs.
// `--outDir <dir>` writes elsewhere; `--noCheck` skips the type check (`npm run check` runs it over the whole tree).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import process from 'node:process';
import { bundleErrand } from './transpile-src.mjs';

const root = path.join(import.meta.dirname, '..');
const args = process.argv.slice(2);
const outDirAt = args.indexOf('--outDir');
const unknown = args.filter((arg, i) => arg !== '--noCheck' && i !== outDirAt && (outDirAt === -1 || i !== outDirAt + 1));
if (unknown.length || (outDirAt !== -1 && !args[outDirAt + 1])) {
  process.stderr.write(`usage: npm run build [-- --outDir <dir>] [--noCheck]\n`);
  process.exit(2);
}
const outDir = path.resolve(root, outDirAt === -1 ? 'dist' : args[outDirAt + 1]);
if (!args.includes('--noCheck')) {
  const check = spawnSync('tsc', ['-p', 'tsconfig.build.json', '--noEmit'], { cwd: root, stdio: 'inherit' });
  if (check.status !== 0) process.exit(check.status ?? 1);
}
await bundleErrand(root, outDir);
