import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify';
import { sql } from 'kysely';
import type { Db } from '../core/db.js';
import { checkRedisReady, type RedisClient } from '../core/redis.js';

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// The answer names the failing check only: error text may carry host names or worse. The log has the reason.
async function check(name: string, probe: () => Promise<unknown>, log: FastifyBaseLogger): Promise<'ok' | 'unreachable'> {
  try {
    await withTimeout(probe(), 1000);
    return 'ok';
  } catch (err) {
    log.warn({ check: name, err }, 'readiness check failed');
    return 'unreachable';
  }
}

export const healthRoutes: FastifyPluginAsync<{ db: Db; redis: RedisClient }> = async (app, deps) => {
  app.get('/healthz', async () => ({ status: 'ok' }));

  // Redis is checked as a topology: a cluster with every slot served, or the primary Sentinel points at.
  app.get('/readyz', async (request, reply) => {
    const [postgres, redis] = await Promise.all([
      check('postgres', () => sql`select 1`.execute(deps.db), request.log),
      check('redis', () => checkRedisReady(deps.redis), request.log),
    ]);
    const checks = { postgres, redis };
    if (postgres === 'ok' && redis === 'ok') return { status: 'ready', checks };
    return reply.code(503).send({ status: 'unavailable', checks });
  });
};
