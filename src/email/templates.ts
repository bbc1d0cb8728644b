import type { OutgoingEmail } from './mailer.js';

/** A link under PUBLIC_BASE_URL that keeps its path (`https://x.com/errand` + `auth/…` → `https://x.com/errand/auth/…`). */
export function publicLink(baseUrl: string, relativePath: string): URL {
  return new URL(relativePath, baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function layout(title: string, paragraphs: string[], link: { href: string; label: string }): string {
  const body = paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join('\n');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
${body}
<p><a href="${escapeHtml(link.href)}">${escapeHtml(link.label)}</a></p>
</body></html>`;
}

export function verificationEmail(to: { email: string; name: string | null }, link: string): OutgoingEmail {
  const greeting = to.name ? `Hello ${to.name},` : 'Hello,';
  const lines = [greeting, 'Please confirm your email address for errand. The link is valid for 24 hours.'];
  return {
    to: to.email,
    subject: 'Confirm your email address',
    text: `${lines.join('\n\n')}\n\n${link}\n\nIf you did not sign up, ignore this email.\n`,
    html: layout('Confirm your email address', [...lines, 'If you did not sign up, ignore this email.'], { href: link, label: 'Confirm my email' }),
  };
}

export function orderTrackingEmail(
  to: string,
  order: { id: string; amount: number; currency: string },
  link: string,
): OutgoingEmail {
  const amount = `${(order.amount / 100).toFixed(2)} ${order.currency}`;
  const lines = [`Thank you: your payment of ${amount} for order ${order.id} was received.`, 'Follow your order here:'];
  return {
    to,
    subject: `Your order ${order.id} is paid`,
    text: `${lines.join('\n\n')}\n\n${link}\n`,
    html: layout('Your order is paid', lines, { href: link, label: 'Track my order' }),
  };
}
