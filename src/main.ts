import closeWithGrace from 'close-with-grace';
import { ConfigError, loadConfig, type Config } from './config.js';
import { startErrand } from './errand.js';

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  // One line naming the bad variable, then stop.
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
}

const errand = await startErrand(config);
const { log } = errand.deps;

// First signal: graceful stop within the grace period (+ slack for queues and pools). Second signal: immediate exit.
closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS + 5000 }, async ({ signal, err }) => {
  if (err) log.error({ err }, 'fatal error, stopping');
  log.info({ signal }, 'stopping');
  await errand.close();
  log.info('stopped');
});

await errand.app.listen({ port: config.PORT, host: config.HOST });
