import t from 'tap';
import { validate, compileErrors } from '@readme/openapi-parser';
import { startTestErrand, testEnv } from '../support/helpers.js';

const ADMIN_TOKEN = 'admin-token-for-the-openapi-test-0123';

interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required?: boolean;
  example?: unknown;
}
interface Operation {
  tags?: string[];
  summary?: string;
  security?: Record<string, string[]>[];
  parameters?: Parameter[];
  requestBody?: { content: Record<string, { schema: Record<string, unknown>; example?: unknown }> };
  responses: Record<string, { description: string; content?: Record<string, { schema?: { properties?: Record<string, unknown> } }> }>;
}
interface Document {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, { type: string; scheme: string }> };
}

/** Every (method, url) in `app.printRoutes({ commonPrefix: false })`: a tree whose nodes add to their parent's path. */
function registeredRoutes(tree: string): { method: string; url: string }[] {
  const routes: { method: string; url: string }[] = [];
  const pathAtDepth: string[] = [];
  for (const line of tree.split('\n')) {
    const match = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!match) continue;
    const depth = match[1].length / 4;
    const path = (depth > 0 ? pathAtDepth[depth - 1] : '') + match[2];
    pathAtDepth[depth] = path;
    pathAtDepth.length = depth + 1;
    for (const method of match[3]?.split(', ') ?? []) routes.push({ method, url: path });
  }
  return routes;
}

const toOpenApiPath = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

function operations(doc: Document): { method: string; path: string; operation: Operation }[] {
  return Object.entries(doc.paths).flatMap(([path, byMethod]) =>
    Object.entries(byMethod).map(([method, operation]) => ({ method: method.toUpperCase(), path, operation })),
  );
}

t.test('the OpenAPI document: valid 3.1, every route, every error with its body, security', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ADMIN_TOKEN, ROLE: 'all' }));
  const res = await errand.app.inject('/docs/openapi.json');
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /application\/json/);
  const doc = res.json<Document>();
  t.match(doc.openapi, /^3\.1\./);

  // A real validator: the OpenAPI 3.1 schema plus its own rules (unique parameters, operationIds, …). It dereferences in place: give it a copy.
  const result = await validate(structuredClone(doc) as never);
  t.ok(result.valid, result.valid ? 'valid' : compileErrors(result));

  const documented = new Set(operations(doc).map(({ method, path }) => `${method} ${path}`));
  // Left out on purpose: HEAD twins of GET routes, the docs' own pages and assets, and Bull Board's assets and internal API (its page is in).
  const routes = registeredRoutes(errand.app.printRoutes({ commonPrefix: false })).filter(
    ({ method, url }) => method !== 'HEAD' && !url.startsWith('/docs') && !url.startsWith('/admin/board/'),
  );
  t.ok(routes.length >= 13, `found the registered routes (${routes.length})`);
  for (const { method, url } of routes) {
    t.ok(documented.has(`${method} ${toOpenApiPath(url)}`), `${method} ${url} is in the document`);
  }
  for (const expected of [
    'POST /auth/signup',
    'GET /auth/verify-email',
    'POST /orders',
    'GET /orders/{id}/tracking',
    'POST /payments/webhook',
    'GET /admin/queues',
    'POST /admin/sweeps',
    'GET /admin/board',
    'GET /metrics',
  ]) {
    t.ok(documented.has(expected), `${expected} is in the document`);
  }

  t.match(doc.components.securitySchemes, {
    adminBearer: { type: 'http', scheme: 'bearer' },
    boardBasic: { type: 'http', scheme: 'basic' },
  });
  for (const { method, path, operation } of operations(doc)) {
    const name = `${method} ${path}`;
    t.ok(operation.summary, `${name} has a summary`);
    t.ok(operation.tags?.length, `${name} has a tag`);
    const statuses = Object.keys(operation.responses);
    t.ok(
      statuses.some((status) => status.startsWith('2')),
      `${name} documents its success`,
    );
    for (const status of statuses.filter((s) => Number(s) >= 400)) {
      const response = operation.responses[status];
      t.not(response.description, 'Default Response', `${name} ${status} says when it happens`);
      const body = response.content?.['application/json']?.schema;
      // readyz's 503 is its own {status, checks}; every other error is {statusCode, error, message}.
      if (name === 'GET /readyz') continue;
      t.same(Object.keys(body?.properties ?? {}).sort(), ['error', 'message', 'statusCode'], `${name} ${status} has the error body`);
    }
    if (path.startsWith('/admin/')) {
      t.ok(statuses.includes('401'), `${name} documents 401`);
      t.same(operation.security, [path === '/admin/board' ? { boardBasic: [] } : { adminBearer: [] }], `${name} names its security scheme`);
    } else {
      t.equal(operation.security, undefined, `${name} is public`);
    }
    if (operation.requestBody) {
      t.ok(operation.requestBody.content['application/json']?.example, `${name} has an example body`);
    }
  }

  const signup = doc.paths['/auth/signup'].post;
  t.same(Object.keys(signup.responses).sort(), ['202', '400', '413', '415', '429', '500', '503']);
  const webhook = doc.paths['/payments/webhook'].post;
  t.same(
    webhook.parameters
      ?.filter((p) => p.in === 'header')
      .map((p) => p.name)
      .sort(),
    ['webhook-id', 'webhook-signature', 'webhook-timestamp'],
  );
  t.ok(webhook.parameters?.find((p) => p.name === 'webhook-signature')?.required, 'the signature header is required');
  t.match(webhook.requestBody?.content['application/json']?.schema, { properties: { id: {}, type: {}, data: {} } });
  t.same(Object.keys(webhook.responses).sort(), ['200', '400', '401', '413', '422', '500', '503']);
});

t.test("each operation's documented example request gets a status the document lists", async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ADMIN_TOKEN, ROLE: 'all' }));
  const doc = (await errand.app.inject('/docs/openapi.json')).json<Document>();
  const seen: string[] = [];
  for (const { method, path, operation } of operations(doc)) {
    const name = `${method} ${path}`;
    const parameters = operation.parameters ?? [];
    let url = path;
    for (const parameter of parameters.filter((p) => p.in === 'path')) {
      t.not(parameter.example, undefined, `${name}: path parameter ${parameter.name} has an example`);
      url = url.replace(`{${parameter.name}}`, encodeURIComponent(String(parameter.example)));
    }
    const query = new URLSearchParams();
    for (const parameter of parameters.filter((p) => p.in === 'query' && p.example !== undefined))
      query.set(parameter.name, String(parameter.example));
    const headers: Record<string, string> = {};
    for (const parameter of parameters.filter((p) => p.in === 'header' && p.example !== undefined))
      headers[parameter.name] = String(parameter.example);
    const scheme = Object.keys(operation.security?.[0] ?? {})[0];
    if (scheme === 'adminBearer') headers.authorization = `Bearer ${ADMIN_TOKEN}`;
    if (scheme === 'boardBasic') headers.authorization = `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}`;
    const example = operation.requestBody?.content['application/json']?.example;
    if (example !== undefined) headers['content-type'] = 'application/json';

    const res = await errand.app.inject({
      method: method as 'GET',
      url: query.size ? `${url}?${query}` : url,
      headers,
      ...(example !== undefined ? { payload: JSON.stringify(example) } : {}),
    });
    seen.push(`${name} → ${res.statusCode}`);
    t.ok(
      Object.keys(operation.responses).includes(String(res.statusCode)),
      `${name} answered ${res.statusCode}, one of ${Object.keys(operation.responses).join(', ')}`,
    );
    if (res.statusCode >= 400)
      t.equal(res.json<{ statusCode: number }>().statusCode, res.statusCode, `${name}: the error body names its status`);
  }
  // The examples reach the routes' real work, not only their refusals.
  t.ok(seen.includes('POST /auth/signup → 202'), seen.join('; '));
  t.ok(seen.includes('POST /orders → 201'));
  t.ok(seen.includes('GET /admin/queues → 200'));
  t.ok(seen.includes('POST /admin/sweeps → 202'));
  t.ok(seen.includes('GET /admin/board → 200'));
  t.ok(seen.includes('POST /payments/webhook → 401'), 'the example webhook carries no valid signature');
});

t.test('/docs is a page that reads the document; its assets are served', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'api' }));
  const page = await errand.app.inject('/docs');
  t.equal(page.statusCode, 200);
  t.match(page.headers['content-type'], /text\/html/);
  t.match(page.headers['content-security-policy'], /default-src 'self'/, 'a content security policy');
  t.notMatch(page.headers['content-security-policy'], /upgrade-insecure-requests/, 'that works over plain http');
  t.equal((await errand.app.inject('/healthz')).headers['content-security-policy'], undefined, 'only on the docs pages');
  const scripts = [...page.body.matchAll(/<script src="([^"]+)"/g)].map((m) => m[1]);
  t.ok(
    scripts.some((src) => src.endsWith('swagger-ui-bundle.js')),
    'Swagger UI',
  );
  for (const src of scripts) {
    const asset = await errand.app.inject(src);
    t.equal(asset.statusCode, 200, src);
  }
  const initializer = await errand.app.inject('/docs/static/swagger-initializer.js');
  t.match(initializer.body, /resolveUrl\('\.\/json'\)/, 'the page loads the document from /docs/json');
  const json = await errand.app.inject('/docs/json');
  const openapi = await errand.app.inject('/docs/openapi.json');
  t.same(json.json(), openapi.json(), '/docs/json (what the page reads) is the same document');
  t.notOk(
    Object.keys(openapi.json<Document>().paths).some((path) => path.startsWith('/admin')),
    'no ADMIN_TOKEN: no admin routes, none documented',
  );
});

t.test('the worker role serves no docs', async (t) => {
  const errand = await startTestErrand(t, testEnv(t, { ROLE: 'worker' }));
  const res = await errand.app.inject('/docs/openapi.json');
  t.equal(res.statusCode, 404);
  t.equal((await errand.app.inject('/docs')).statusCode, 404);
});
