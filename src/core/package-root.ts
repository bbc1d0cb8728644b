import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The nearest directory at or above `start` that holds a file `name`. */
export function directoryHolding(name: string, start: string): string {
  for (let dir = start; dir !== path.dirname(dir); dir = path.dirname(dir)) if (existsSync(path.join(dir, name))) return dir;
  throw new Error(`no ${name} above ${start}`);
}

/**
 * The directory holding errand's package.json (migrations/ sits beside it), found by walking up from this module:
 * the same answer whether the code runs from src/, from dist/ (bundled by `npm run build`) or from a test bundle.
 */
export const packageRoot: string = directoryHolding('package.json', path.dirname(fileURLToPath(import.meta.url)));
