import type { FastifyPluginAsync } from 'fastify';
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import { Type } from 'typebox';
import type { Db } from '../core/db.js';
import { describeRoutes, type RouteDoc } from '../core/route-docs.js';

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function check(probe: () => Promise<unknown>): Promise<string> {
  try {
    await withTimeout(probe(), 1000);
    return 'ok';
  } catch (error) {
    return `error: ${(error as Error).message}`;
  }
}

const ChecksSchema = Type.Object({
  postgres: Type.String({ description: '`ok`, or why not' }),
  redis: Type.String({ description: '`ok`, or why not' }),
});

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
      503: Type.Object({ status: Type.Literal('unavailable'), checks: ChecksSchema }, { description: 'a check failed; it is named in checks' }),
    },
  },
};

export const healthRoutes: FastifyPluginAsync<{ db: Db; redis: Redis }> = async (app, deps) => {
  app.addHook('onRoute', describeRoutes(HEALTH_ROUTE_DOCS));
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    const [postgres, redis] = await Promise.all([check(() => sql`select 1`.execute(deps.db)), check(() => deps.redis.ping())]);
    const checks = { postgres, redis };
    if (postgres === 'ok' && redis === 'ok') return { status: 'ready', checks };
    return reply.code(503).send({ status: 'unavailable', checks });
  });
};
