import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../src/config.js';
import { signStandardWebhook, signWebhook } from '../src/core/webhook-signature.js';

// Signs a body with the first secret in PAYMENT_WEBHOOK_SECRET (the dev default when unset).
// The body is signed byte for byte: send it with `curl --data-binary`.
//   npm run -s sign-webhook -- '{"id":"evt_1",…}'                  → the `webhook-signature` value (t=…,v1=<hex>)
//   npm run -s sign-webhook -- --file body.json [--timestamp 1700000000]
//   npm run -s sign-webhook -- --standard [--id msg_1] '{…}'       → three `-H` arguments for curl (Standard Webhooks)
const usage = 'usage: sign-webhook (<body> | --file <path>) [--timestamp <unix seconds>] [--standard [--id <webhook-id>]]';

let body: Buffer;
let timestamp: number | undefined;
let standard = false;
let webhookId: string | undefined;
try {
  const { values, positionals } = parseArgs({
    options: { file: { type: 'string' }, timestamp: { type: 'string' }, standard: { type: 'boolean' }, id: { type: 'string' } },
    allowPositionals: true,
  });
  if ((values.file === undefined) === (positionals.length !== 1)) throw new Error('give exactly one of <body> or --file');
  body = values.file === undefined ? Buffer.from(positionals[0], 'utf8') : await readFile(values.file);
  if (values.timestamp !== undefined) {
    if (!/^\d+$/.test(values.timestamp)) throw new Error('--timestamp must be unix seconds');
    timestamp = Number(values.timestamp);
  }
  standard = values.standard ?? false;
  if (values.id !== undefined && !standard) throw new Error('--id goes with --standard');
  webhookId = values.id;
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n${usage}\n`);
  process.exit(2);
}

try {
  const secret = loadConfig().PAYMENT_WEBHOOK_SECRETS[0];
  if (standard) {
    const headers = signStandardWebhook(secret, webhookId ?? `msg_${randomBytes(12).toString('hex')}`, body, timestamp);
    process.stdout.write(
      `${Object.entries(headers)
        .map(([name, value]) => `-H '${name}: ${value}'`)
        .join(' ')}\n`,
    );
  } else {
    process.stdout.write(`${signWebhook(secret, body, timestamp)}\n`);
  }
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exitCode = 1;
}
