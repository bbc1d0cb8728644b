import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../src/config.js';
import { signWebhook } from '../src/payments/signature.js';

// Prints the `webhook-signature` header value for a body, signed with PAYMENT_WEBHOOK_SECRET
// (the dev default when unset). The body is signed byte for byte: send it with `curl --data-binary`.
//   npm run -s sign-webhook -- '{"id":"evt_1",…}'
//   npm run -s sign-webhook -- --file body.json [--timestamp 1700000000]
const usage = 'usage: sign-webhook (<body> | --file <path>) [--timestamp <unix seconds>]';

let body: Buffer;
let timestamp: number | undefined;
try {
  const { values, positionals } = parseArgs({ options: { file: { type: 'string' }, timestamp: { type: 'string' } }, allowPositionals: true });
  if ((values.file === undefined) === (positionals.length !== 1)) throw new Error('give exactly one of <body> or --file');
  body = values.file === undefined ? Buffer.from(positionals[0]!, 'utf8') : await readFile(values.file);
  if (values.timestamp !== undefined) {
    if (!/^\d+$/.test(values.timestamp)) throw new Error('--timestamp must be unix seconds');
    timestamp = Number(values.timestamp);
  }
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n${usage}\n`);
  process.exit(2);
}

try {
  process.stdout.write(`${signWebhook(loadConfig().PAYMENT_WEBHOOK_SECRET, body, timestamp)}\n`);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exitCode = 1;
}
