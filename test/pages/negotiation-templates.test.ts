import t from 'tap';
import { prefersHtml } from '../../src/pages/negotiation.js';
import { escapeHtml, html, SafeHtml } from '../../src/core/html.js';
import { formatMinorUnits } from '../../src/core/money.js';
import { orderTrackingEmail, verificationEmail } from '../../src/email/templates.js';

t.test('prefersHtml: text/html must rank strictly above application/json', async (t) => {
  const cases: [string | undefined, boolean, string][] = [
    [undefined, false, 'no Accept: an API client'],
    ['', false, 'empty Accept'],
    ['*/*', false, 'anything: a tie, JSON wins'],
    ['application/json', false, 'JSON only'],
    ['text/html', true, 'a scanner asking for HTML only'],
    ['text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8', true, "Chromium's navigation Accept"],
    ['text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', true, "Firefox's navigation Accept"],
    ['application/json, text/html', false, 'equal q-values (both 1): a tie'],
    ['text/html, application/json', false, 'a tie with text/html first in the header: still JSON (negotiator would pick HTML)'],
    ['text/html;q=0.5, application/json;q=0.5', false, 'equal explicit q-values'],
    ['text/html;q=0.9, application/json;q=0.8', true, 'html ranked higher by q'],
    ['application/json;q=0.9, text/html;q=0.1', false, 'json ranked higher by q'],
    ['text/*, application/json;q=0.5', true, 'text/* covers text/html'],
    ['text/html;q=0, */*', false, 'html explicitly refused'],
    ['*/*;q=0.1, text/html;q=0.2', true, 'the exact range wins over */* for html; json gets */*'],
    ['TEXT/HTML', true, 'media types are case-insensitive'],
    ['text/html;q=abc', false, 'a malformed q-value makes the range unacceptable'],
    ['text/html;q=1.5', false, 'a q-value above 1 is malformed'],
    ['text/html ; Q=0.7 , application/json;q=0.6', true, 'whitespace and an upper-case Q'],
    ['garbage, text', false, 'no valid range at all'],
    ['text/html;level=1', true, 'other parameters are ignored'],
  ];
  for (const [accept, expected, why] of cases) t.equal(prefersHtml(accept), expected, `${JSON.stringify(accept)}: ${why}`);
});

t.test('a json range ranked below */* still loses to html', async (t) => {
  // json's q comes from its own exact range (0.1), html's from */* (1): html is preferred.
  t.equal(prefersHtml('application/json;q=0.1, */*'), true);
});

t.test('escapeHtml and html`…` escape every interpolated value', async (t) => {
  t.equal(escapeHtml(`<a href="x" onclick='y'>&</a>`), '&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;');
  const name = '<script>alert(1)</script>';
  const out = html`<p title="${'"quoted"'}">${name}</p>`;
  t.ok(out instanceof SafeHtml);
  t.equal(out.markup, '<p title="&quot;quoted&quot;">&lt;script&gt;alert(1)&lt;/script&gt;</p>');
  t.equal(
    html`<ul>${['a<', 'b'].map((x) => html`<li>${x}</li>`)}</ul>`.markup,
    '<ul><li>a&lt;</li><li>b</li></ul>',
    'nested html is kept, its values escaped',
  );
  t.equal(html`[${null}${undefined}${false}${0}]`.markup, '[0]', 'null, undefined and false render nothing; 0 renders');
});

t.test('formatMinorUnits takes the decimals from Intl, per currency', async (t) => {
  t.equal(formatMinorUnits(1999, 'USD'), '$19.99');
  t.equal(formatMinorUnits(5, 'USD'), '$0.05');
  t.equal(formatMinorUnits(1999, 'JPY'), '¥1,999', 'JPY has no minor unit');
  t.equal(formatMinorUnits(1500, 'KWD'), 'KWD\u00a01.500', 'KWD has three decimals (and a no-break space)');
  t.equal(formatMinorUnits(123456, 'EUR'), '€1,234.56');
  t.equal(formatMinorUnits(Number.MAX_SAFE_INTEGER, 'USD'), '$90,071,992,547,409.91', 'exact for the largest amount an order accepts');
});

t.test('email HTML parts are whole documents and escape what they carry', async (t) => {
  const link = 'https://errand.test/auth/verify-email?token=abc&x=1';
  const email = verificationEmail('eve@example.com', link);
  t.match(email.html, /^<!doctype html>\n<html lang="en">/);
  t.match(email.html, '<meta name="viewport" content="width=device-width, initial-scale=1">');
  t.match(email.html, 'href="https://errand.test/auth/verify-email?token=abc&amp;x=1"', 'the link is escaped in the attribute');
  t.match(email.text, /^Hello,\n/, 'no name: the requester chose none of the text (test/signup/verification-email.test.ts)');

  const tracking = orderTrackingEmail('b@example.com', { id: 'o1', amount: 1999, currency: 'JPY' }, link);
  t.match(tracking.text, 'your payment of ¥1,999 for order o1', 'amount in the currency, JPY without decimals');
  t.match(tracking.html, '¥1,999');
});
