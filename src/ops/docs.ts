import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { packageRoot } from '../core/package-root.js';
import type { RouteDoc } from '../core/route-docs.js';

export const DOCS_PREFIX = '/docs';
export const OPENAPI_PATH = `${DOCS_PREFIX}/openapi.json`;

/** Names of the security schemes, as route schemas refer to them (`security: [{ [ADMIN_BEARER]: [] }]`). */
export const ADMIN_BEARER = 'adminBearer';
export const BOARD_BASIC = 'boardBasic';

/** An admin API route: tag, bearer scheme, and the 401 its onRequest hook answers. */
export function adminRouteDoc(doc: Omit<RouteDoc, 'tags' | 'security'>): RouteDoc {
  return {
    ...doc,
    tags: ['admin'],
    security: [{ [ADMIN_BEARER]: [] }],
    responses: { ...doc.responses, 401: 'missing or wrong bearer token' },
  };
}

/**
 * The OpenAPI 3.1 document of every route registered after this, built by
 * @fastify/swagger from the route schemas, at /docs/openapi.json, and Swagger
 * UI reading it at /docs. Must be registered before the routes: swagger
 * collects them as they are added. Imported on call, so the worker role (and
 * every script) never loads it.
 */
export async function registerApiDocs(app: FastifyInstance): Promise<void> {
  const { version } = JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  const [{ default: swagger }, { default: swaggerUi }] = await Promise.all([import('@fastify/swagger'), import('@fastify/swagger-ui')]);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'errand',
        version,
        description:
          'Answers HTTP requests fast and does the slow work (email delivery, payment reconciliation, sweeps) in BullMQ jobs. ' +
          'Errors use the `{statusCode, error, message}` shape. Bodies are validated strictly: no type coercion, unknown properties rejected ' +
          '(the payment webhook excepted). Admin routes exist only when ADMIN_TOKEN is set.',
      },
      tags: [
        { name: 'signup', description: 'Sign-up and email verification' },
        { name: 'orders', description: 'Orders and their tracking page' },
        { name: 'payments', description: 'Payment provider webhook' },
        {
          name: 'email',
          description: 'Bounces and complaints from the email providers (each route exists when its provider is configured)',
        },
        { name: 'ops', description: 'Health, readiness and metrics (every role)' },
        { name: 'admin', description: 'Queues, failed jobs, sweeps, suppressions, Bull Board (ADMIN_TOKEN)' },
      ],
      components: {
        securitySchemes: {
          [ADMIN_BEARER]: { type: 'http', scheme: 'bearer', description: '`Authorization: Bearer $ADMIN_TOKEN`' },
          [BOARD_BASIC]: { type: 'http', scheme: 'basic', description: 'Any user name, password `$ADMIN_TOKEN` (what a browser can send)' },
        },
      },
    },
  });
  await app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    // Swagger UI's own policy (its inline script and style by hash), less upgrade-insecure-requests:
    // over plain http (development, behind a TLS proxy that talks http) it would send the page's assets to https.
    staticCSP: true,
    transformStaticCSP: (header) => header.replace(/\s*upgrade-insecure-requests;?/, ''),
  });
  app.get(OPENAPI_PATH, { schema: { hide: true } }, async () => app.swagger());
}
