import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { QUEUE_NAMES, type Queues } from '../queues.js';
import { describeRoutes } from '../core/route-docs.js';
import { requireBasicPassword } from './auth.js';
import { BOARD_BASIC } from './docs.js';

export const BOARD_PATH = '/admin/board';

/** onRequest hook for /admin/*: no other site may frame these pages (clickjacking on the board's clean/obliterate buttons). */
export async function refuseFraming(_request: FastifyRequest, reply: FastifyReply): Promise<void> {
  reply.header('x-frame-options', 'DENY');
  reply.header('content-security-policy', "frame-ancestors 'none'");
}

/** Bull Board UI for every queue at /admin/board, behind HTTP Basic (any user, password ADMIN_TOKEN). */
export const boardRoutes: FastifyPluginAsync<{ queues: Queues; adminToken: string }> = async (app, options) => {
  app.addHook('onRequest', refuseFraming);
  // Bull Board hides its routes from the OpenAPI document; its entry page is shown there, its assets and internal API are not.
  app.addHook('onRoute', (route) => {
    if (route.method !== 'GET' || route.url !== BOARD_PATH) return;
    route.schema = { ...route.schema, hide: false };
    // Fastify reuses these options for `${BOARD_PATH}/` right after, and swagger would show that url.
    route.config = { ...route.config, swaggerTransform: ({ schema }: { schema: object }) => ({ schema, url: BOARD_PATH }) };
  });
  app.addHook(
    'onRoute',
    describeRoutes({
      [`GET ${BOARD_PATH}`]: {
        tags: ['admin'],
        summary: 'Bull Board: browse, retry, promote and clean jobs (a web page)',
        security: [{ [BOARD_BASIC]: [] }],
        responses: {
          200: { description: 'the Bull Board page', content: { 'text/html': { schema: { type: 'string' } } } },
          401: 'missing or wrong password (the browser asks for it)',
        },
      },
    }),
  );
  app.addHook('onRequest', requireBasicPassword(options.adminToken));
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(BOARD_PATH);
  createBullBoard({ queues: QUEUE_NAMES.map((name) => new BullMQAdapter(options.queues[name])), serverAdapter });
  await app.register(serverAdapter.registerPlugin(), { prefix: BOARD_PATH });
};
