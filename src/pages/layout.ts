import { createHash } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import { html, SafeHtml } from '../core/html.js';

// One stylesheet for every page. Colours keep a contrast ratio of at least 7:1 (WCAG AAA) against their background.
const PAGE_CSS = `
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;padding:24px 16px;background:#f3f4f6;color:#111827;font:1.0625rem/1.6 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:34rem;margin:0 auto;padding:28px 24px;background:#fff;border:1px solid #d1d5db;border-radius:12px}
h1{margin:0 0 12px;font-size:1.5rem;line-height:1.25}
p{margin:0 0 14px}
.muted{color:#374151;font-size:.95rem}
.brand{margin:0 0 20px;color:#374151;font-weight:600;letter-spacing:.02em}
.status{display:inline-block;margin:0 0 16px;padding:4px 12px;border-radius:999px;font-weight:600;background:#e5e7eb;color:#111827}
.status-good{background:#dcfce7;color:#14532d}
.status-bad{background:#fee2e2;color:#7f1d1d}
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 16px;margin:0 0 16px}
dt{color:#374151}
dd{margin:0;font-weight:600;overflow-wrap:anywhere}
form{margin:20px 0 8px}
button{display:block;width:100%;min-height:48px;padding:12px 20px;border:0;border-radius:8px;background:#1e40af;color:#fff;font:inherit;font-weight:600;cursor:pointer}
button:hover{background:#1e3a8a}
button:focus-visible{outline:3px solid #111827;outline-offset:3px}
`;

// The stylesheet's hash, so the policy allows exactly this <style> element and no other inline style or script.
const STYLE_SOURCE = `'sha256-${createHash('sha256').update(PAGE_CSS).digest('base64')}'`;

/** No scripts, no external anything, forms only back to errand, never inside a frame. */
export const PAGE_CONTENT_SECURITY_POLICY = `default-src 'none'; style-src ${STYLE_SOURCE}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`;

// A constant of this module, never user data: it goes in verbatim so that its hash matches.
const PAGE_STYLE = new SafeHtml(PAGE_CSS);

export interface Page {
  /** Shown in the tab and as the page's only heading. */
  title: string;
  body: SafeHtml;
}

export function renderPage(page: Page): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${page.title} · errand</title>
<style>${PAGE_STYLE}</style>
</head>
<body>
<main>
<p class="brand">errand</p>
<h1>${page.title}</h1>
${page.body}
</main>
</body>
</html>
`.markup;
}

/**
 * Sends a page with the headers every page carries. `Referrer-Policy: no-referrer` and `no-store` because
 * the URL holds a token; `Vary: Accept` because the same URL answers JSON to API clients.
 */
export function sendPage(reply: FastifyReply, statusCode: number, page: Page) {
  return reply
    .code(statusCode)
    .headers({
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': PAGE_CONTENT_SECURITY_POLICY,
      'x-frame-options': 'DENY',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
      vary: 'Accept',
    })
    .send(renderPage(page));
}
