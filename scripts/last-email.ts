import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { ConfigError, loadConfig } from '../src/config.js';

// Prints the newest .eml written with SMTP_URL unset, decoded (links are wrapped in the raw file).
try {
  const { MAIL_DIR } = loadConfig();
  const files = (await readdir(MAIL_DIR)).filter((file) => file.endsWith('.eml')).sort();
  const newest = files.at(-1);
  if (!newest) throw new Error(`no .eml files in ${MAIL_DIR}`);
  const email = await simpleParser(await readFile(path.join(MAIL_DIR, newest)));
  const to = Array.isArray(email.to) ? email.to.map((a) => a.text).join(', ') : (email.to?.text ?? '');
  process.stdout.write(`File: ${newest}\nTo: ${to}\nSubject: ${email.subject ?? ''}\n\n${email.text ?? ''}`);
} catch (error) {
  process.stderr.write(`${error instanceof ConfigError ? error.message : (error as Error).message}\n`);
  process.exitCode = 1;
}
