// The fault run's SMTP server, in the driver process: counts every accepted message per envelope recipient with its
// Message-ID, and can be switched into an outage (not listening: connections refused) or into answering 451 to DATA.
import { performance } from 'node:perf_hooks';
import { SMTPServer } from 'smtp-server';
import { freePort, onCleanup } from '../lib.js';

export interface ReceivedCopy {
  /** ms since the run's clock started (see `clock`). */
  at: number;
  messageId: string | undefined;
  subject: string | undefined;
}

export type SmtpMode = 'accept' | 'reject-451';

export interface CountingSmtp {
  url: string;
  port: number;
  /** Accepted copies per recipient address (lower-cased), in arrival order. */
  received: Map<string, ReceivedCopy[]>;
  accepted(): number;
  /** Messages answered 451 while in 'reject-451' mode. */
  rejected(): number;
  setMode(mode: SmtpMode): void;
  /** Stops listening and drops open connections: errand's connections are refused until `up()`. */
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

const HEADER_LIMIT = 16 * 1024;

/** The value of one header in a raw header block (unfolded), or undefined. */
export function headerValue(head: string, name: string): string | undefined {
  const unfolded = head.replace(/\r?\n[ \t]+/g, ' ');
  const match = new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(unfolded);
  return match ? match[1].trim() : undefined;
}

export async function startCountingSmtp(clock: () => number = () => performance.now()): Promise<CountingSmtp> {
  const port = await freePort();
  const received = new Map<string, ReceivedCopy[]>();
  let acceptedCount = 0;
  let rejectedCount = 0;
  let mode: SmtpMode = 'accept';
  let server: SMTPServer | undefined;

  const create = () =>
    new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      disableReverseLookup: true,
      logger: false,
      // Let a `down()` drop open pooled connections at once instead of after 30 s.
      closeTimeout: 10,
      onData(stream, session, callback) {
        let head = '';
        stream.on('data', (chunk: Buffer) => {
          if (head.length < HEADER_LIMIT && !head.includes('\r\n\r\n')) head += chunk.toString('latin1');
        });
        stream.on('end', () => {
          if (mode === 'reject-451') {
            rejectedCount += 1;
            const error = Object.assign(new Error('4.3.0 Temporary local problem, message not accepted'), { responseCode: 451 });
            return callback(error);
          }
          const end = head.indexOf('\r\n\r\n');
          const headers = end === -1 ? head : head.slice(0, end);
          const copy = { at: clock(), messageId: headerValue(headers, 'Message-ID'), subject: headerValue(headers, 'Subject') };
          for (const rcpt of session.envelope.rcptTo) {
            const address = rcpt.address.toLowerCase();
            const copies = received.get(address);
            if (copies) copies.push(copy);
            else received.set(address, [copy]);
          }
          acceptedCount += 1;
          callback();
        });
      },
    });

  const up = async () => {
    if (server) return;
    const next = create();
    next.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      next.server.once('error', reject);
      next.listen(port, '127.0.0.1', () => resolve());
    });
    server = next;
  };
  const down = async () => {
    const current = server;
    if (!current) return;
    server = undefined;
    await new Promise<void>((resolve) => current.close(() => resolve()));
  };
  await up();
  onCleanup(`stop SMTP :${port}`, down);
  return {
    url: `smtp://127.0.0.1:${port}`,
    port,
    received,
    accepted: () => acceptedCount,
    rejected: () => rejectedCount,
    setMode: (next) => {
      mode = next;
    },
    down,
    up,
    close: down,
  };
}
