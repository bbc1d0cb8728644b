import t from 'tap';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runScript, startTestErrand, testEnv, waitFor } from '../support/helpers.js';

t.test('with SMTP_URL unset, emails are .eml files that `npm run last-email` decodes', async (t) => {
  const mailDir = await mkdtemp(path.join(tmpdir(), 'errand-mail-'));
  t.teardown(() => rm(mailDir, { recursive: true, force: true }));
  const errand = await startTestErrand(t, testEnv(t, { SMTP_URL: undefined, MAIL_DIR: mailDir }));

  const res = await errand.app.inject({ method: 'POST', url: '/auth/signup', payload: { email: 'newcomer@example.com', name: 'New' } });
  t.equal(res.statusCode, 202);
  const files = await waitFor(
    async () => {
      const found = (await readdir(mailDir)).filter((f) => f.endsWith('.eml'));
      return found.length ? found : undefined;
    },
    15000,
    '.eml file',
  );
  t.equal(files.length, 1);

  const { code, stdout, stderr } = await runScript('last-email.ts', [], { MAIL_DIR: mailDir });
  t.equal(code, 0, `last-email exits 0 ${stderr}`);
  t.match(stdout, /To: newcomer@example\.com/);
  t.match(stdout, /Subject: Confirm your email address/);
  const link = new URL(/http\S+\/auth\/verify-email\?token=\S+/.exec(stdout)![0]);
  const verify = await errand.app.inject({ method: 'GET', url: `${link.pathname}${link.search}` });
  t.equal(verify.statusCode, 200, 'the link in the file verifies');
});
