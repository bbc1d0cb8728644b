import t from 'tap';
import { startTestErrand, testEnv } from '../support/helpers.js';
import { createOrder, WEBHOOK_SECRET } from '../support/payments.js';

t.test('odd tracking requests are wrong tokens: 404, same body', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', PAYMENT_WEBHOOK_SECRET: WEBHOOK_SECRET }));
  const order = await createOrder(errand.app, { email: 'buyer@example.com' });
  const urls = [
    `/orders/${order.id}/tracking`,
    `/orders/${order.id}/tracking?token=${'x'.repeat(500)}`,
    `/orders/${order.id}/tracking?token=a&token=b`,
    `/orders/${'9'.repeat(300)}/tracking?token=abc`,
  ];
  for (const url of urls) {
    const res = await errand.app.inject({ method: 'GET', url });
    t.equal(res.statusCode, 404, url.slice(0, 60));
    t.same(res.json(), { statusCode: 404, error: 'Not Found', message: 'order not found' });
  }
});
