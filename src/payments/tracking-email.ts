import type { Config } from '../config.js';
import type { OrderToEmail } from '../db/orders.js';
import type { EmailComposer } from '../email/worker.js';
import { orderTrackingEmail, publicLink } from '../email/templates.js';
import { trackingToken } from './tracking.js';

/** The tracking link is computed at send time from the order id; the token is never stored, queued or logged. */
export function composeOrderTrackingEmail(deps: {
  statements: { findOrder: (id: string) => Promise<OrderToEmail | undefined> };
  config: Config;
  trackingKey: Buffer;
}): EmailComposer<'order-tracking-link'> {
  const { trackingKey } = deps;
  const { findOrder } = deps.statements;
  return async (data) => {
    const order = await findOrder(data.orderId);
    // Only paid orders get the email (paid is final, so this never flips back).
    if (!order || order.status !== 'paid') return null;
    const link = publicLink(deps.config.PUBLIC_BASE_URL, `orders/${order.id}/tracking`);
    link.searchParams.set('token', trackingToken(trackingKey, order.id));
    return { ...orderTrackingEmail(order.email, order, link.toString()), suppressed: order.suppressed };
  };
}
