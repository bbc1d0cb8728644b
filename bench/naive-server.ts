// Bench-only baseline, never deployed: the same signup, but the verification
// email goes out over SMTP inside the request, as a naive service would do it.
// It reuses errand's schema, repository, token, template and mailer code so the
// only difference from errand is where the slow work happens.
import Fastify from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { loadConfig } from '../src/config.js';
import { createDataLayer } from '../src/db/pool.js';
import { createStatements } from '../src/deps.js';
import { createLogger } from '../src/core/logger.js';
import { createMailer } from '../src/email/mailer.js';
import { verificationEmail } from '../src/email/templates.js';
import { insertVerificationToken } from '../src/db/verification-tokens.js';
import { signupThrottleKey } from '../src/signup/throttle.js';
import { SignupBodySchema } from '../src/signup/schemas.js';
import { mintVerificationToken, VERIFICATION_TOKEN_TTL_MS } from '../src/signup/tokens.js';

const config = loadConfig(process.env);
if (!config.SMTP_URL) throw new Error('naive-server needs SMTP_URL');
const data = createDataLayer(config.DATABASE_URL, { poolMax: config.PG_POOL_MAX });
const { db } = data;
const { signupUser } = createStatements(data);
const mailer = createMailer({ smtpUrl: config.SMTP_URL, from: config.MAIL_FROM, mailDir: config.MAIL_DIR });

const app = Fastify({
  loggerInstance: createLogger(config.LOG_LEVEL),
  ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false } },
}).withTypeProvider<TypeBoxTypeProvider>();

app.get('/healthz', async () => ({ status: 'ok' }));

app.post('/auth/signup', { bodyLimit: 16 * 1024, schema: { body: SignupBodySchema } }, async (request, reply) => {
  const email = request.body.email.trim().toLowerCase();
  const name = request.body.name ?? null;
  const token = mintVerificationToken();
  // The outbox row it also writes is never published here: only the naive send below happens.
  const row = await signupUser({ email, name, throttleKey: signupThrottleKey(email) });
  const due = row ? (row.payload as { userId: string }).userId : null;
  if (due !== null)
    await insertVerificationToken(db, { userId: due, hash: token.hash, expiresAt: new Date(Date.now() + VERIFICATION_TOKEN_TTL_MS) });
  if (due !== null) {
    const link = new URL('/auth/verify-email', config.PUBLIC_BASE_URL);
    link.searchParams.set('token', token.raw);
    // The naive part: the client waits for the SMTP server.
    await mailer.send(verificationEmail(email, link.toString()), due);
  }
  return reply.code(202).send({ status: 'accepted' });
});

const stop = async () => {
  await app.close();
  mailer.close();
  await data.destroy();
};
process.once('SIGTERM', () => void stop());
process.once('SIGINT', () => void stop());

await app.listen({ port: config.PORT, host: config.HOST });
