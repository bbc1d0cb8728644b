import { html, type SafeHtml } from '../core/html.js';
import { formatMinorUnits } from '../core/money.js';
import type { OutgoingEmail } from './mailer.js';

/** A link under PUBLIC_BASE_URL that keeps its path (`https://x.com/errand` + `auth/…` → `https://x.com/errand/auth/…`). */
export function publicLink(baseUrl: string, relativePath: string): URL {
  return new URL(relativePath, baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
}

// Inline style attributes, not a <style> block: several mail apps drop <style>. Contrast ≥ 7:1 throughout.
const STYLE = {
  body: 'margin:0;padding:24px 12px;background:#f3f4f6;color:#111827;font:16px/1.6 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif',
  card: 'max-width:34rem;margin:0 auto;padding:24px;background:#ffffff;border:1px solid #d1d5db;border-radius:12px',
  heading: 'margin:0 0 16px;font-size:22px;line-height:1.3;color:#111827',
  paragraph: 'margin:0 0 14px',
  button: 'display:inline-block;padding:12px 20px;border-radius:8px;background:#1e40af;color:#ffffff;font-weight:600;text-decoration:none',
  fallback: 'margin:20px 0 0;color:#374151;font-size:14px;overflow-wrap:anywhere',
  fallbackLink: 'color:#1e40af',
};

/** An HTML part that reads well in a mail app and in a browser: doctype, lang, viewport, one button, the raw link as a fallback. */
function layout(title: string, paragraphs: string[], link: { href: string; label: string }, footer?: string): string {
  const body: SafeHtml = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
</head>
<body style="${STYLE.body}">
<main style="${STYLE.card}">
<h1 style="${STYLE.heading}">${title}</h1>
${paragraphs.map((p) => html`<p style="${STYLE.paragraph}">${p}</p>\n`)}<p style="${STYLE.paragraph}"><a href="${link.href}" style="${STYLE.button}">${link.label}</a></p>
${footer ? html`<p style="${STYLE.paragraph}">${footer}</p>\n` : ''}<p style="${STYLE.fallback}">If the button does not work, open this link: <a href="${link.href}" style="${STYLE.fallbackLink}">${link.href}</a></p>
</main>
</body>
</html>
`;
  return body.markup;
}

/**
 * No name, nor anything else the requester typed, besides the address (CONTRACT.md): anyone may sign up any
 * address, and a free-text name would carry their words (a link, "WIN MONEY") to its inbox under errand's name.
 */
export function verificationEmail(to: string, link: string): OutgoingEmail {
  const lines = ['Hello,', 'Please confirm your email address for errand. The link is valid for 24 hours.'];
  const footer = 'If you did not sign up, ignore this email.';
  return {
    to,
    subject: 'Confirm your email address',
    text: `${lines.join('\n\n')}\n\n${link}\n\n${footer}\n`,
    html: layout('Confirm your email address', lines, { href: link, label: 'Confirm my email' }, footer),
  };
}

export function orderTrackingEmail(to: string, order: { id: string; amount: number; currency: string }, link: string): OutgoingEmail {
  const amount = formatMinorUnits(order.amount, order.currency);
  const lines = [`Thank you: your payment of ${amount} for order ${order.id} was received.`, 'Follow your order here:'];
  return {
    to,
    subject: `Your order ${order.id} is paid`,
    text: `${lines.join('\n\n')}\n\n${link}\n`,
    html: layout('Your order is paid', lines, { href: link, label: 'Track my order' }),
  };
}
