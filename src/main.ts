import closeWithGrace from 'close-with-grace';
import { ConfigError, loadConfig, type Config } from './config.js';
import { startTracing } from './core/tracing.js';

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  // One line naming the bad variable, then stop.
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
}

// Tracing first: its instrumentations must be in place before errand imports fastify, pg and ioredis.
const tracing = await startTracing(config.OTEL_EXPORTER_OTLP_ENDPOINT);
// Migrations run while the rest of errand loads: network waits overlap module compilation (start-up time).
const { prepareDatabase } = await import('./db/migrations.js');
const databasePrepared = prepareDatabase(config.DATABASE_URL);
databasePrepared.catch(() => {}); // startErrand awaits it and fails start-up on its error
const { startErrand } = await import('./errand.js');
const errand = await startErrand(config, { databasePrepared });
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
