// `npm start`: transpiles src/ to dist/ with esbuild (well under a second, no type check — as tsx did), then runs
// dist/main.js in this process. The server thus runs plain JavaScript like the production start: no on-the-fly
// transform, no loader thread, no second node process (tsx's CLI runs the program in a child).
// `npm run build` (tsc, type-checked) writes the same files; the Dockerfile uses that.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

const root = path.join(import.meta.dirname, '..');
const sources = readdirSync(path.join(root, 'src'), { recursive: true, encoding: 'utf8' })
  .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
  .map((file) => path.join(root, 'src', file));

await build({
  entryPoints: sources,
  outdir: path.join(root, 'dist'),
  outbase: path.join(root, 'src'),
  // File for file, as tsc emits it: relative imports already name the .js files.
  bundle: false,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: 'linked',
  logLevel: 'warning',
});

await import('../dist/main.js');
