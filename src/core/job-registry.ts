import { UnrecoverableError, Worker, type Job, type WorkerOptions } from 'bullmq';
import type { Static, TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import type { Config } from '../config.js';
import type { RedisClient } from './redis.js';
import { queueTelemetry } from './tracing.js';
import { firstValidationError } from './schemas.js';

export const COMPLETED_JOBS_KEPT = { age: 24 * 3600, count: 1000 } as const;
export const FAILED_JOBS_KEPT = { age: 7 * 24 * 3600, count: 10000 } as const;

/** One job kind of a queue: its payload schema and the options every job of that name is added with. */
export interface JobDeclaration<Schema extends TSchema = TSchema> {
  payload: Schema;
  /** BullMQ priority (1 runs first; unset runs before any prioritised job). */
  priority?: number;
}

/**
 * Everything errand knows about one queue, declared once: producers, the
 * outbox, workers and the admin routes take their names and types from here.
 */
export interface QueueDefinition<
  Name extends string = string,
  Jobs extends Record<string, JobDeclaration> = Record<string, JobDeclaration>,
> {
  name: Name;
  jobs: Jobs;
  /** Worker options beyond the shared defaults (connection, prefix, retention, lock and stall timings). */
  worker(
    config: Config,
  ): Partial<
    Pick<WorkerOptions, 'concurrency' | 'limiter' | 'lockDuration' | 'stalledInterval' | 'maxStalledCount' | 'maxStartedAttempts'>
  >;
}

export function defineQueue<const Name extends string, const Jobs extends Record<string, JobDeclaration>>(
  definition: QueueDefinition<Name, Jobs>,
): QueueDefinition<Name, Jobs> {
  return definition;
}

export type JobNameOf<Q extends QueueDefinition> = keyof Q['jobs'] & string;
export type PayloadOf<Q extends QueueDefinition, N extends JobNameOf<Q>> = Static<Q['jobs'][N]['payload']>;

/** Runs one job whose payload has already been checked against its schema. */
export type JobProcessor<Data> = (data: Data, job: Job, signal: AbortSignal | undefined) => Promise<unknown>;

/** One processor per declared job name: a declared job without a handler does not compile. */
export type Processors<Q extends QueueDefinition> = { readonly [N in JobNameOf<Q>]: JobProcessor<PayloadOf<Q, N>> };

// Each payload schema compiled on first use: far cheaper per job than interpreting it (Value.Check).
const payloadValidators = new WeakMap<TSchema, ReturnType<typeof Compile>>();

/** Throws UnrecoverableError (no retry can fix it) unless `data` matches the job's declared payload. */
export function checkPayload<Q extends QueueDefinition>(definition: Q, jobName: string, data: unknown): void {
  const declaration = definition.jobs[jobName];
  if (!declaration) throw new UnrecoverableError(`unknown ${definition.name} job name ${jobName}`);
  let validator = payloadValidators.get(declaration.payload);
  if (!validator) payloadValidators.set(declaration.payload, (validator = Compile(declaration.payload)));
  if (!validator.Check(data)) {
    throw new UnrecoverableError(`invalid ${jobName} payload: ${firstValidationError(validator.Errors(data), { root: 'data' })}`);
  }
}

/** The one processor BullMQ runs for a queue: check the payload at the boundary, then dispatch by job name. */
export function dispatchJobs<Q extends QueueDefinition>(definition: Q, processors: Processors<Q>) {
  return async (job: Job, _token?: string, signal?: AbortSignal): Promise<unknown> => {
    checkPayload(definition, job.name, job.data);
    const process = processors[job.name as JobNameOf<Q>] as JobProcessor<unknown>;
    return process(job.data, job, signal);
  };
}

/**
 * The one Worker factory: shared defaults from config, then the queue's own options. `connection` is the process's
 * worker-profile connection (Deps.workerRedis): the Worker shares it and duplicates it for its blocking reads.
 */
export function createQueueWorker<Q extends QueueDefinition>(
  definition: Q,
  processors: Processors<Q>,
  config: Config,
  connection: RedisClient,
): Worker {
  return new Worker(definition.name, dispatchJobs(definition, processors), {
    connection,
    prefix: config.QUEUE_PREFIX,
    removeOnComplete: COMPLETED_JOBS_KEPT,
    lockDuration: config.WORKER_LOCK_DURATION_MS,
    stalledInterval: config.WORKER_STALLED_INTERVAL_MS,
    ...queueTelemetry(),
    ...definition.worker(config),
  });
}
