import { ConfigError, loadConfig } from '../src/config.js';
import { prepareDatabase } from '../src/db/migrations.js';
import { createMigrationTerminal } from './terminal-progress.js';

// Creates the database if missing, applies pending migrations, exits 0; any failure exits 1.
// stdout: one JSON line {applied}; on a terminal, stderr shows each step.
try {
  const applied = await prepareDatabase(loadConfig().DATABASE_URL, createMigrationTerminal());
  process.stdout.write(`${JSON.stringify({ applied })}\n`);
} catch (error) {
  process.stderr.write(`${error instanceof ConfigError ? error.message : `migration failed: ${(error as Error).message}`}\n`);
  process.exitCode = 1;
}
