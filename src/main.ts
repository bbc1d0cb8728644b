import closeWithGrace from 'close-with-grace';
import { ConfigError, loadConfig, type Config } from './config.js';
import { startTracing } from './core/tracing.js';

/**
 * A start-up failure: a ConfigError as its one line naming the variable; anything else as its stack only.
 * Node's own report of an uncaught error prints the error's properties too, and a URL error's `input` is the
 * whole URL with its password.
 */
function failStart(error: unknown): never {
  const text = error instanceof ConfigError ? error.message : `errand could not start: ${(error as Error)?.stack ?? String(error)}`;
  process.stderr.write(`${text}\n`);
  process.exit(1);
}

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  failStart(error);
}

// Tracing first: its instrumentations must be in place before errand imports fastify, pg and ioredis.
const tracing = await startTracing(config.OTEL_EXPORTER_OTLP_ENDPOINT).catch(failStart);
// Migrations run while the rest of errand loads: network waits overlap module compilation (start-up time).
const { prepareDatabase } = await import('./db/migrations.js');
const databasePrepared = prepareDatabase(config.DATABASE_URL);
databasePrepared.catch(() => {}); // startErrand awaits it and fails start-up on its error
const { startErrand } = await import('./errand.js');
const errand = await startErrand(config, { databasePrepared }).catch(failStart);
const { log } = errand.deps;
if (tracing) log.info('tracing on: spans exported over OTLP/HTTP');

// First signal: graceful stop within the grace period (+ slack for queues and pools). Second signal: immediate exit.
closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS + 5000 }, async ({ signal, err }) => {
  if (err) log.error({ err }, 'fatal error, stopping');
  log.info({ signal }, 'stopping');
  await errand.close();
  // After the close, so the spans of the last jobs are exported too.
  await tracing?.shutdown().catch((err: unknown) => log.warn({ err }, 'could not flush traces'));
  log.info('stopped');
});

await errand.app.listen({ port: config.PORT, host: config.HOST });
