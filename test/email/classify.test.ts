import t from 'tap';
import { classifySmtpError, parseRetryAfterMs } from '../../src/email/mailer.js';
import { maskEmail, maskEmailsIn } from '../../src/core/logger.js';
import { publicLink } from '../../src/email/templates.js';

t.test('SMTP failures are classified as the contract says', async (t) => {
  t.same(classifySmtpError({ responseCode: 550, response: '550 5.1.1 no such user' }), { kind: 'permanent' });
  t.same(classifySmtpError({ responseCode: 554, response: '554 rejected' }), { kind: 'permanent' });
  t.same(classifySmtpError({ responseCode: 451, response: '451 4.3.0 local error' }), { kind: 'transient' });
  t.same(classifySmtpError({ responseCode: 450, response: '450 mailbox busy' }), { kind: 'transient' });
  // Outages of the server itself pause the queue (issue 11): connection, DNS, TLS, 421 without a rate hint, credentials.
  t.same(classifySmtpError({ code: 'ECONNECTION', message: 'connect ECONNREFUSED' }), { kind: 'outage', cause: 'smtp-unreachable' });
  t.same(classifySmtpError({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' }), { kind: 'outage', cause: 'smtp-unreachable' });
  t.same(classifySmtpError({ code: 'EDNS', message: 'getaddrinfo ENOTFOUND' }), { kind: 'outage', cause: 'smtp-unreachable' });
  t.same(classifySmtpError({ code: 'EAUTH', responseCode: 535, response: '535 5.7.8 bad credentials' }), { kind: 'outage', cause: 'smtp-auth' });
  t.same(classifySmtpError({ responseCode: 530, response: '530 5.7.0 Authentication required' }), { kind: 'outage', cause: 'smtp-auth' });
  t.same(classifySmtpError({ responseCode: 454, response: '454 4.7.0 temporary authentication failure' }), { kind: 'outage', cause: 'smtp-auth' });
  t.same(classifySmtpError(new Error('socket hang up')), { kind: 'transient' });
  t.same(classifySmtpError({ responseCode: 421, response: '421 4.7.0 Try again later' }), { kind: 'outage', cause: 'smtp-unavailable' });
  t.same(classifySmtpError({ responseCode: 421, response: '421 4.7.0 Too many connections, slow down' }), { kind: 'throttle' });
  t.same(classifySmtpError({ responseCode: 451, response: '451 4.7.1 Rate limit exceeded, retry after 30 seconds' }), { kind: 'throttle', retryAfterMs: 30000 });
  t.same(classifySmtpError({ responseCode: 450, response: '450 Too many messages, slow down' }), { kind: 'throttle' });
  t.same(classifySmtpError({ responseCode: 429, response: 'Too Many Requests, retry in 2 minutes' }), { kind: 'throttle', retryAfterMs: 120000 });
  t.same(classifySmtpError({ responseCode: 451, response: '451 4.7.1 Rate limited' }), { kind: 'throttle' });
  // Deferrals that are not rate limits are ordinary retries with backoff.
  t.same(classifySmtpError({ responseCode: 450, response: '450 4.2.0 Greylisted, please try again later' }), { kind: 'transient' });
  t.same(classifySmtpError({ responseCode: 451, response: '451 4.3.0 could not generate message id' }), { kind: 'transient' });
});

t.test('retry-after hints', async (t) => {
  t.equal(parseRetryAfterMs('try again in 5 seconds'), 5000);
  t.equal(parseRetryAfterMs('retry after 250 ms'), 250);
  t.equal(parseRetryAfterMs('try again in 1 minute'), 60000);
  t.equal(parseRetryAfterMs('please try again later'), undefined);
});

t.test('masked email keeps first letter and domain only', async (t) => {
  t.equal(maskEmail('alice@example.com'), 'a***@example.com');
  t.equal(maskEmail('broken'), '***');
  t.equal(maskEmailsIn('550 5.1.1 <bob.smith@example.com>: Recipient address rejected'), '550 5.1.1 <b***@example.com>: Recipient address rejected');
  t.equal(maskEmailsIn('to a@x.io, c@y.org'), 'to a***@x.io, c***@y.org');
});

t.test('links keep the path of PUBLIC_BASE_URL', async (t) => {
  t.equal(publicLink('https://x.com/errand', 'auth/verify-email').toString(), 'https://x.com/errand/auth/verify-email');
  t.equal(publicLink('https://x.com/errand/', 'auth/verify-email').toString(), 'https://x.com/errand/auth/verify-email');
  t.equal(publicLink('http://localhost:3000', 'orders/1/tracking').toString(), 'http://localhost:3000/orders/1/tracking');
});
