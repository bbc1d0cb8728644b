import type { FastifyPluginAsync } from 'fastify';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { QUEUE_NAMES, type Queues } from '../queues.js';
import { requireBasicPassword } from './auth.js';

export const BOARD_PATH = '/admin/board';

/** Bull Board UI for every queue at /admin/board, behind HTTP Basic (any user, password ADMIN_TOKEN). */
export const boardRoutes: FastifyPluginAsync<{ queues: Queues; adminToken: string }> = async (app, options) => {
  app.addHook('onRequest', requireBasicPassword(options.adminToken));
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(BOARD_PATH);
  createBullBoard({ queues: QUEUE_NAMES.map((name) => new BullMQAdapter(options.queues[name])), serverAdapter });
  await app.register(serverAdapter.registerPlugin(), { prefix: BOARD_PATH });
};
