import { setTimeout as delay } from 'node:timers/promises';
import { UnrecoverableError, type Job } from 'bullmq';
import { CANCELLED_REASON } from './jobs.js';
import { discardBatchOutput, type BatchDb, type CheckpointOutcome } from './repository.js';

/** Thrown inside a chunk transaction to roll the chunk back because the job was cancelled. */
export class JobCancelledError extends Error {
  constructor() {
    super(CANCELLED_REASON);
    this.name = 'JobCancelledError';
  }
}

/** Thrown when another worker wrote a checkpoint this one did not expect (this one lost the job). */
export class CheckpointTakenOverError extends Error {
  constructor(jobId: string) {
    super(`batch job ${jobId} was moved on by another worker; this run stops`);
    this.name = 'CheckpointTakenOverError';
  }
}

/** Throws (rolling the chunk back) unless the checkpoint was written. */
export function assertCheckpointWritten(outcome: CheckpointOutcome, jobId: string): void {
  if (outcome !== 'written') throw checkpointRefusedError(outcome, jobId);
}

/** Why a checkpoint was refused, as the error that ends this run. */
export function checkpointRefusedError(outcome: Exclude<CheckpointOutcome, 'written'>, jobId: string): Error {
  return outcome === 'cancel-requested' ? new JobCancelledError() : new CheckpointTakenOverError(jobId);
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new JobCancelledError();
}

/** The optional pause between chunks (BATCH_CHUNK_PAUSE_MS); a cancel cuts it short. */
export async function pauseBetweenChunks(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (ms <= 0) return;
  try {
    await delay(ms, undefined, { signal });
  } catch {
    throw new JobCancelledError();
  }
}

/**
 * Runs one batch job's body; a cancellation (abort signal or the database
 * flag seen at a checkpoint) deletes the partial output and fails the job
 * with reason `cancelled`, without retries.
 */
export async function runCancellable<T>(db: BatchDb, jobId: string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    if (error instanceof JobCancelledError) {
      await discardBatchOutput(db, jobId);
      throw new UnrecoverableError(CANCELLED_REASON);
    }
    throw error;
  }
}

/** `job.updateProgress` at most this often by time, and after every chunk of at most BATCH_CHUNK_ROWS rows. */
export interface BatchProgress {
  done: number;
  total: number | null;
}

/** One chunk of a batch job, committed: the rows done after it, and whether it was the last. */
export interface CommittedChunk {
  done: number;
  final: boolean;
}

/**
 * The resume-and-checkpoint loop of every batch job: report where the job stands, then per chunk check the
 * AbortSignal, read the chunk and write its result with the checkpoint in one transaction (`commitNextChunk`, the
 * job's own statements), run what follows the commit (publishing the chunk's outbox rows), report progress, and
 * pause (BATCH_CHUNK_PAUSE_MS) until the last chunk. Returns the last chunk.
 */
export async function runCheckpointed<C extends CommittedChunk>(
  job: Pick<Job, 'updateProgress'>,
  signal: AbortSignal | undefined,
  loop: {
    /** Rows done before this run (the stored checkpoint). */
    done: number;
    total: number | null;
    pauseMs: number;
    commitNextChunk: () => Promise<C>;
    afterCommit?: (chunk: C) => Promise<void>;
  },
): Promise<C> {
  await job.updateProgress({ done: loop.done, total: loop.total } satisfies BatchProgress);
  for (;;) {
    throwIfAborted(signal);
    const chunk = await loop.commitNextChunk();
    await loop.afterCommit?.(chunk);
    await job.updateProgress({ done: chunk.done, total: loop.total } satisfies BatchProgress);
    if (chunk.final) return chunk;
    await pauseBetweenChunks(loop.pauseMs, signal);
  }
}
