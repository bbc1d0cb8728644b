import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify';
import { sql } from 'kysely';
import { Type } from 'typebox';
import type { Db } from '../db/schema.js';
import { unlessAborted } from '../core/abort.js';
import { checkRedisReady, type RedisClient } from '../core/redis.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';

const PROBE_TIMEOUT_MS = 1000;

// The answer names the failing check only: error text may carry host names or worse. The log has the reason.
async function check(name: string, probe: () => Promise<unknown>, log: FastifyBaseLogger): Promise<'ok' | 'unreachable'> {
  try {
    await unlessAborted(probe(), AbortSignal.timeout(PROBE_TIMEOUT_MS), `no answer within ${PROBE_TIMEOUT_MS} ms`);
    return 'ok';
  } catch (err) {
    log.warn({ check: name, err }, 'readiness check failed');
    return 'unreachable';
  }
}

const CheckSchema = Type.Union([Type.Literal('ok'), Type.Literal('unreachable')]);
const ChecksSchema = Type.Object({ postgres: CheckSchema, redis: CheckSchema });

// For GET /docs/openapi.json.
const HEALTH_ROUTE_DOCS: Record<string, RouteDoc> = {
  'GET /healthz': {
    tags: ['ops'],
    summary: 'Liveness: 200 while the process runs',
    responses: { 200: Type.Object({ status: Type.Literal('ok') }, { description: 'alive' }) },
  },
  'GET /readyz': {
    tags: ['ops'],
    summary: 'Readiness: PostgreSQL and Redis reachable',
    responses: {
      200: Type.Object({ status: Type.Literal('ready'), checks: ChecksSchema }, { description: 'both reachable' }),
      503: Type.Object(
        { status: Type.Literal('unavailable'), checks: ChecksSchema },
        { description: 'a check failed; it is named in checks' },
      ),
    },
  },
};

export const healthRoutes: FastifyPluginAsync<{ db: Db; redis: RedisClient }> = async (app, deps) => {
  app.addHook('onRoute', describeRoutes(HEALTH_ROUTE_DOCS));
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
