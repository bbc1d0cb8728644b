/** A row naming a queue errand does not declare (any more): no retry can publish it. */
export class UnknownQueueError extends Error {
  override name = 'UnknownQueueError';
}

// What BullMQ refuses in a job's own id, options or size before anything reaches Redis (Job.validateOptions).
const BULLMQ_JOB_REFUSALS = [
  /^The size of job .* exceeds the limit/,
  /^Custom Id cannot/,
  /^Priority should/,
  /^The following options cannot be used together/,
  /^Deduplication/,
  /^Debounce option/,
  /^Jitter should/,
];

// What Redis refuses in one command's own arguments (a payload too large for it): the same row fails every time.
const REDIS_ARGUMENT_REFUSALS = [/^ERR .*exceeds maximum allowed size/, /^ERR Protocol error: invalid bulk length/];

/**
 * Whether a failed publish is the row's own fault (an unknown queue, a payload or job id BullMQ or Redis refuses
 * as invalid), so the relay counts it against the row and skips the row after OUTBOX_MAX_FAILURES. Anything else
 * (OOM, MISCONF, CLUSTERDOWN, READONLY, LOADING, BUSY, TRYAGAIN, MASTERDOWN, NOREPLICAS, a command timeout, a
 * closed connection, an error never seen before) says Redis cannot take writes now: the row is kept, unharmed,
 * for when it can. Unknown errors count as Redis's: skipping a healthy row loses a job, keeping a bad one only
 * retries it.
 */
export function isRowFault(error: unknown): boolean {
  if (error instanceof UnknownQueueError) return true;
  if (!(error instanceof Error)) return false;
  const { message } = error;
  // JSON.stringify refusing the payload (a BigInt, a cycle): the row's data, not Redis.
  if (error instanceof TypeError && /JSON|serialize/i.test(message)) return true;
  return BULLMQ_JOB_REFUSALS.some((refusal) => refusal.test(message)) || REDIS_ARGUMENT_REFUSALS.some((refusal) => refusal.test(message));
}
