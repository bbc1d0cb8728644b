/**
 * Settles as `promise` does, unless `signal` aborts first (for a deadline: `AbortSignal.timeout(ms)`, whose timer
 * never holds the process open); then rejects with `message`. `promise` itself is not cancelled.
 */
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal, message: string): Promise<T> {
  if (signal.aborted) return Promise.reject(new Error(message));
  const aborted = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new Error(message)), { once: true }));
  // Promise.race handles the rejection of whichever loses.
  return Promise.race([promise, aborted]);
}
