import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { startErrand, type StartOptions } from '../../src/errand.js';
import { captureLogs, type T, type TestErrand } from '../support/helpers.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';

/** startTestErrand with app options (e.g. the CA that SNS certificate fetches trust). */
export async function startEventsErrand(t: T, env: Record<string, string | undefined>, app: StartOptions['app'] = {}): Promise<TestErrand> {
  const config = loadConfig(env);
  const logs = captureLogs();
  const errand = await startErrand(config, { logDestination: logs.stream, app });
  t.teardown(() => errand.close());
  return { ...errand, config, logs };
}

export async function eventCount(errand: TestErrand, provider: string, kind: string): Promise<number | undefined> {
  const text = (await errand.app.inject('/metrics')).body;
  return sampleValue(parsePrometheus(text), 'errand_email_events_total', { provider, kind });
}

export interface TestPki {
  caPem: string;
  serverKey: string;
  serverCert: string;
  /** An RSA key and its self-signed certificate, standing in for SNS's signing certificate. */
  signingKey: string;
  signingCert: string;
}

/** A CA, a server certificate for localhost / 127.0.0.1 signed by it, and a signing certificate: made with openssl. */
export function makePki(t: T): TestPki {
  const dir = mkdtempSync(path.join(tmpdir(), 'errand-sns-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const key = ['-newkey', 'rsa:2048', '-nodes'];
  openssl('req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=errand test CA');
  openssl('req', ...key, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  openssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '2',
    '-extfile',
    'san.ext',
  );
  openssl('req', '-x509', ...key, '-keyout', 'signing.key', '-out', 'signing.pem', '-days', '2', '-subj', '/CN=sns.amazonaws.com');
  const read = (file: string) => readFileSync(path.join(dir, file), 'utf8');
  return {
    caPem: read('ca.pem'),
    serverKey: read('server.key'),
    serverCert: read('server.pem'),
    signingKey: read('signing.key'),
    signingCert: read('signing.pem'),
  };
}

export interface CertServer {
  origin: string;
  /** Paths requested, in order. */
  requests: string[];
  server: Server;
}

/** An HTTPS server (certificate from the test CA) serving the signing certificate at /cert.pem and 200 for /confirm. */
export async function startCertServer(t: T, pki: TestPki, host = '127.0.0.1'): Promise<CertServer> {
  const requests: string[] = [];
  const server = createServer({ key: pki.serverKey, cert: pki.serverCert }, (request, response) => {
    requests.push(request.url ?? '');
    if (request.url === '/cert.pem') response.writeHead(200, { 'content-type': 'application/x-pem-file' }).end(pki.signingCert);
    else if (request.url?.startsWith('/confirm')) response.writeHead(200).end('<ConfirmSubscriptionResponse/>');
    else if (request.url === '/huge.pem') response.writeHead(200).end('x'.repeat(200 * 1024));
    else response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as { port: number };
  return { origin: `https://${host}:${port}`, requests, server };
}
