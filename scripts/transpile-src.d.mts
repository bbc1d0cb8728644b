// Types of transpile-src.mjs (plain JavaScript: `npm start` runs it before anything is transpiled).
export function srcFiles(root: string): string[];
export function transpileSrcSync(root: string, outdir: string): void;
export const TEST_BUILD_DIR: string;
export function transpileForTests(root: string): string;
export const TEST_BUNDLE_DIR: string;
export function bundleTests(root: string): Promise<void>;
export const TEST_MAIN_DIR: string;
export function bundleMainForTests(root: string): Promise<void>;
export function bundleErrand(root: string, outdir: string): Promise<void>;
