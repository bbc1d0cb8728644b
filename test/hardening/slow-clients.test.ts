import t from 'tap';
import { connect } from 'node:net';
import { startTestErrand, testEnv } from '../support/helpers.js';

const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api', HTTP_REQUEST_TIMEOUT_MS: '1000' }));
await errand.app.listen({ port: 0, host: '127.0.0.1' });
const { port } = errand.app.server.address() as { port: number };

t.test('a client trickling its body is cut off after HTTP_REQUEST_TIMEOUT_MS', async (t) => {
  const socket = connect(port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  let answer = '';
  socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));

  const body = JSON.stringify({ email: 'slow@example.com', name: 'x'.repeat(200) });
  socket.write(`POST /auth/signup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
  const started = Date.now();
  // One byte every 50 ms: the whole body would take over 10 s; the socket never idles long enough for an idle timeout.
  let sent = 0;
  let isClosed = false;
  void closed.then(() => (isClosed = true));
  while (!isClosed && sent < body.length) {
    socket.write(body[sent]!);
    sent += 1;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await closed;
  t.ok(sent < body.length, `cut off after ${sent} of ${body.length} bytes, ${Date.now() - started} ms`);
  t.match(answer, /^HTTP\/1\.1 408/, 'answered 408 Request Timeout');
  const user = await errand.deps.db.selectFrom('users').select('id').where('email', '=', 'slow@example.com').executeTakeFirst();
  t.notOk(user, 'nothing written');
});

t.test('an ordinary request still goes through', async (t) => {
  const res = await fetch(`http://127.0.0.1:${port}/auth/signup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'quick@example.com' }) });
  t.equal(res.status, 202);
  await res.arrayBuffer();
});
