import type { FastifyPluginAsync } from 'fastify';
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import type { Db } from '../core/db.js';
import { unlessAborted } from '../core/abort.js';

const PROBE_TIMEOUT_MS = 1000;

async function check(probe: () => Promise<unknown>): Promise<string> {
  try {
    await unlessAborted(probe(), AbortSignal.timeout(PROBE_TIMEOUT_MS), `no answer within ${PROBE_TIMEOUT_MS} ms`);
    return 'ok';
  } catch (error) {
    return `error: ${(error as Error).message}`;
  }
}

export const healthRoutes: FastifyPluginAsync<{ db: Db; redis: Redis }> = async (app, deps) => {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    const [postgres, redis] = await Promise.all([check(() => sql`select 1`.execute(deps.db)), check(() => deps.redis.ping())]);
    const checks = { postgres, redis };
    if (postgres === 'ok' && redis === 'ok') return { status: 'ready', checks };
    return reply.code(503).send({ status: 'unavailable', checks });
  });
};
