import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';
import { REPO_ROOT, type T } from './helpers.js';

/** Debian's chromium (installed by .ci/run when missing); Playwright's own browser download is not reachable here. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Git-ignored (var/): screenshots a reviewer can open after a run. */
export const SCREENSHOT_DIR = join(REPO_ROOT, 'var', 'screenshots');

/** A phone-sized window: the pages must read well there first. */
export const PHONE_VIEWPORT = { width: 390, height: 844 };

/** One headless Chromium for a test file, closed at teardown. */
export async function launchBrowser(t: T): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    // No sandbox (runs as root in CI); no GPU, QUIC or background traffic to Google's services. One renderer process
    // for every page and the GPU thread in the browser process: the tests open many pages of one local site, and a
    // process started per page cost CPU (verify-email-browser, the whole machine: 26.5 s of CPU → 23.2 s).
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--renderer-process-limit=1',
      '--disable-site-isolation-trials',
      '--in-process-gpu',
    ],
  });
  t.teardown(() => browser.close());
  return browser;
}

export async function saveScreenshot(page: Page, name: string): Promise<string> {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** axe-core's serious and critical findings on the current page (rule id, help text and the offending nodes). */
export async function seriousAccessibilityViolations(
  page: Page,
): Promise<{ id: string; impact: string; help: string; targets: string[] }[]> {
  const results = await new AxeBuilder({ page }).analyze();
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({ id: v.id, impact: v.impact!, help: v.help, targets: v.nodes.map((n) => n.target.join(' ')) }));
}

/** True when the page is no wider than the window (no sideways scrolling on a phone). */
export async function fitsTheWindow(page: Page): Promise<boolean> {
  // A string: it runs in the page, and the project's TypeScript has no DOM types.
  return (await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')) === true;
}
