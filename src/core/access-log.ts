import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

const outcomes = new WeakMap<FastifyRequest, { message: string; fields: Record<string, unknown> }>();

/**
 * What a route has to say about its request, written into the request's one
 * access line (a "canonical log line") instead of a line of its own: one
 * write per request on the hot paths. Warnings and errors keep their own lines.
 */
export function noteOutcome(request: FastifyRequest, message: string, fields: Record<string, unknown>): void {
  outcomes.set(request, { message, fields });
}

/** Fastify logs two lines per request (incoming, completed); one line at the end says both, with the route's outcome. */
export class OneLineAccessLog extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const outcome = outcomes.get(request);
    const fields = { ...outcome?.fields, req: request, res: reply, route: request.routeOptions.url ?? null, responseTime: reply.elapsedTime };
    if (error) request.log.error({ ...fields, err: error }, 'request errored');
    else request.log.info(fields, outcome?.message ?? 'request completed');
  }
}
