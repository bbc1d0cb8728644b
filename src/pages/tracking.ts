import { html } from '../core/html.js';
import { formatMinorUnits } from '../core/money.js';
import type { Page } from './layout.js';
import type { OrderStatus } from '../db/schema.js';

export interface TrackedOrder {
  id: string;
  status: OrderStatus;
  amount: number;
  currency: string;
  paidAt: Date | null;
}

// The order's state in a buyer's words: a headline, a short label and what it means for them.
const STATUS_WORDS: Record<
  TrackedOrder['status'],
  { title: string; label: string; tone: 'status-good' | 'status-bad' | null; explanation: string }
> = {
  paid: { title: 'Your order is paid', label: 'Paid', tone: 'status-good', explanation: 'We have received your payment. Thank you!' },
  pending: {
    title: 'We are waiting for your payment',
    label: 'Waiting for payment',
    tone: null,
    explanation: 'We have not received your payment yet. Open this page again later to see its new status.',
  },
  failed: {
    title: 'Your payment did not go through',
    label: 'Payment failed',
    tone: 'status-bad',
    explanation: 'The payment was not completed. If money has left your account anyway, it will show here as paid once it reaches us.',
  },
  expired: {
    title: 'Your payment has expired',
    label: 'Payment expired',
    tone: 'status-bad',
    explanation:
      'The payment was not completed in time. If money has left your account anyway, it will show here as paid once it reaches us.',
  },
};

/** "30 November 2026 at 05:41 UTC": the server does not know the reader's time zone, so it says which one it uses. */
function formatPaidAt(date: Date): string {
  return `${new Intl.DateTimeFormat('en-GB', { dateStyle: 'long', timeStyle: 'short', timeZone: 'UTC' }).format(date)} UTC`;
}

export function orderTrackingPage(order: TrackedOrder): Page {
  const words = STATUS_WORDS[order.status];
  return {
    title: words.title,
    body: html`<p class="${['status', words.tone].filter(Boolean).join(' ')}">${words.label}</p>
<p>${words.explanation}</p>
<dl>
<dt>Amount</dt><dd>${formatMinorUnits(order.amount, order.currency)}</dd>
${order.paidAt ? html`<dt>Paid on</dt><dd><time datetime="${order.paidAt.toISOString()}">${formatPaidAt(order.paidAt)}</time></dd>` : ''}
<dt>Order</dt><dd>${order.id}</dd>
</dl>`,
  };
}

/** One page for every wrong id or token, so the answer tells nothing about which part was wrong. */
export function orderNotFoundPage(): Page {
  return {
    title: 'Order not found',
    body: html`<p>This tracking link does not match an order. Open the link from your order email again, and make sure all of it was copied.</p>`,
  };
}
