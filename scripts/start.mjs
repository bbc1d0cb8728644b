// `npm start`: bundles src/main.ts into dist/ as `npm run build` does (scripts/transpile-src.mjs, bundleErrand:
// esbuild, about a second, no type check — as tsx did), then runs dist/main.js in this process. The server thus
// runs what the image runs: no on-the-fly transform, no loader thread, no second node process.
import path from 'node:path';
import { bundleErrand } from './transpile-src.mjs';

const root = path.join(import.meta.dirname, '..');
await bundleErrand(root, path.join(root, 'dist'));
await import('../dist/main.js');
