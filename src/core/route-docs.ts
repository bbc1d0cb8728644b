import type { RouteOptions } from 'fastify';
import type { TSchema } from 'typebox';
import { errorResponse } from './errors.js';

/** What the OpenAPI document says about one route, beyond the schemas that validate it. */
export interface RouteDoc {
  tags: string[];
  summary: string;
  description?: string;
  /** e.g. `[{ adminBearer: [] }]` (names from ops/docs.ts). */
  security?: Record<string, string[]>[];
  /**
   * Every status the route answers. A string describes it: an error in the
   * `{statusCode, error, message}` shape, or (for a status the route's schema
   * already has) that schema. A schema is used as given.
   */
  responses: Record<number, string | TSchema>;
  /**
   * Body and headers shown in the document but not checked by Fastify: for a
   * route whose handler reads the raw bytes and validates them itself.
   */
  documentedOnly?: { body?: TSchema; headers?: TSchema };
  /** Example values for the document (and its "Try it out"), when the schemas do not carry their own. */
  examples?: { params?: Record<string, string>; body?: unknown };
}

/** A copy of an object schema whose named properties carry one example each (the original may be shared by other routes). */
function withPropertyExamples(schema: TSchema, examples: Record<string, string>): TSchema {
  const properties = { ...(schema as { properties?: Record<string, TSchema> }).properties };
  for (const [name, example] of Object.entries(examples)) {
    if (properties[name]) properties[name] = { ...properties[name], examples: [example] };
  }
  return { ...schema, properties };
}

/** Validation for the parts `documentedOnly` describes: none; the handler does it. */
const acceptAsIs = () => () => true;

/**
 * An onRoute hook (register it in the plugin, before its routes) that adds
 * the docs keyed `"METHOD /url"` to each route's schema. Response schemas the
 * route declares itself are kept; only their descriptions are filled in.
 */
export function describeRoutes(docs: Record<string, RouteDoc>) {
  return (route: RouteOptions): void => {
    const doc = docs[`${[route.method].flat()[0]} ${route.url}`];
    if (!doc) return;
    const schema = { ...route.schema };
    const response: Record<string, unknown> = { ...(schema.response as Record<string, unknown> | undefined) };
    for (const [status, value] of Object.entries(doc.responses)) {
      const existing = response[status] as TSchema | undefined;
      if (typeof value !== 'string') response[status] = value;
      else response[status] = existing ? { ...existing, description: value } : errorResponse(value);
    }
    Object.assign(schema, { tags: doc.tags, summary: doc.summary, response });
    if (doc.description) schema.description = doc.description;
    if (doc.security) schema.security = doc.security;
    if (doc.examples?.params && schema.params) schema.params = withPropertyExamples(schema.params, doc.examples.params);
    if (doc.examples?.body !== undefined && schema.body) schema.body = { ...schema.body, examples: [doc.examples.body] };
    if (doc.documentedOnly) {
      if (schema.body || schema.headers || schema.querystring || schema.params) {
        throw new Error(`${route.url}: documentedOnly is for routes that validate nothing through Fastify`);
      }
      Object.assign(schema, doc.documentedOnly);
      route.validatorCompiler = acceptAsIs;
    }
    route.schema = schema;
  };
}
