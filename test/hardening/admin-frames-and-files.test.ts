import t from 'tap';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createMailer } from '../../src/email/mailer.js';
import { startTestErrand, testEnv } from '../support/helpers.js';

const ADMIN_TOKEN = 'admin-token-for-tests-0123456789abcdef';

t.test('board and admin responses refuse framing, with or without credentials', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', ADMIN_TOKEN }));
  const basic = `Basic ${Buffer.from(`any:${ADMIN_TOKEN}`).toString('base64')}`;
  const requests = [
    { url: '/admin/board', headers: { authorization: basic }, status: 200 },
    { url: '/admin/board', headers: {}, status: 401 },
    { url: '/admin/queues', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, status: 200 },
    { url: '/admin/queues', headers: {}, status: 401 },
  ];
  for (const request of requests) {
    const res = await errand.app.inject({ method: 'GET', url: request.url, headers: request.headers });
    t.equal(res.statusCode, request.status, `${request.url} → ${request.status}`);
    t.equal(res.headers['x-frame-options'], 'DENY', `${request.url} (${request.status}) X-Frame-Options`);
    t.equal(res.headers['content-security-policy'], "frame-ancestors 'none'", `${request.url} (${request.status}) CSP`);
  }
});

t.test('.eml file names come from a safe form of the job id: nothing lands outside MAIL_DIR', async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), 'errand-eml-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const mailDir = path.join(root, 'mail');
  const mailer = createMailer({ from: 'errand <no-reply@localhost>', mailDir });
  t.teardown(() => mailer.close());
  const email = { to: 'a@example.com', subject: 's', text: 't', html: '<p>t</p>' };
  await mailer.send(email, '../../escaped');
  await mailer.send(email, '/etc/passwd');
  await mailer.send(email, 'outbox-12');
  t.same(await readdir(root), ['mail'], 'nothing written beside MAIL_DIR');
  const files = await readdir(mailDir);
  t.equal(files.length, 3);
  for (const file of files) t.match(file, /^\d+-[A-Za-z0-9_-]+\.eml$/, file);
  t.ok(files.some((file) => file.endsWith('-outbox-12.eml')), 'an ordinary id is kept as it is');
});
