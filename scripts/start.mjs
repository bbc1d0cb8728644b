// `npm start`: transpiles src/ to dist/ (scripts/transpile-src.mjs: esbuild, well under a second, no type check —
// as tsx did), then runs dist/main.js in this process. The server thus runs plain JavaScript like the production
// start: no on-the-fly transform, no loader thread, no second node process (tsx's CLI runs the program in a child).
// `npm run build` (tsc, type-checked) writes the same files; the Dockerfile uses that.
import path from 'node:path';
import { transpileSrc } from './transpile-src.mjs';

const root = path.join(import.meta.dirname, '..');
await transpileSrc(root, path.join(root, 'dist'));
await import('../dist/main.js');
