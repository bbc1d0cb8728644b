import { parseArgs } from 'node:util';
import { ProviderSimulator } from '../src/reconcile/simulator.js';
import { serveSimulator } from '../src/reconcile/simulator/server.js';

// The payment provider simulator as its own HTTP server, for demos and tests:
//   npm run provider-sim -- [--port 4010] [--host 127.0.0.1]      (or PORT / HOST)
// then start errand with PAYMENT_PROVIDER_URL=http://127.0.0.1:4010 and control it with
//   PUT /_sim/payments/:ref {status, amount, currency}   PUT /_sim/failures/:ref {failWith: 429|500|503|"timeout"|null}
//   PUT /_sim/config {latencyMs, failRate, failWith}     GET /_sim/stats   POST /_sim/reset
const usage = 'usage: provider-sim [--port <port>] [--host <host>]';

let port: number;
let host: string;
try {
  const { values } = parseArgs({ options: { port: { type: 'string' }, host: { type: 'string' } }, strict: true, allowPositionals: false });
  // This is a dev tool outside errand's config: it reads PORT/HOST itself, like any small server.
  const portText = values.port ?? process.env.PORT ?? '4010';
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) throw new Error(`bad port ${JSON.stringify(portText)}`);
  port = Number(portText);
  host = values.host ?? process.env.HOST ?? '127.0.0.1';
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n${usage}\n`);
  process.exit(2);
}

const simulator = new ProviderSimulator();
const running = await serveSimulator(simulator, { port, host });
process.stdout.write(`${JSON.stringify({ msg: 'payment provider simulator listening', url: running.url })}\n`);

const stop = () => void running.close().then(() => process.exit(0));
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
