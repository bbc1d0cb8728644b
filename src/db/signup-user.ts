import { sql } from 'kysely';
import { activeTraceContext } from '../core/tracing.js';
import { createStatementBatcher } from './batch.js';
import { outboxInsertSql, type OutboxJob, type OutboxRow } from './outbox.js';
import type { DataLayer } from './pool.js';

export interface SignupInput {
  /** Trimmed and lower-cased by the caller. */
  email: string;
  name: string | null;
  /** The address's throttle key (the signup capability's rule: `+tag` removed): addresses sharing it share one 60 s throttle. */
  throttleKey: string;
}

/** Resolves to the outbox row when a verification email is due, undefined otherwise (verified, or throttled). */
export type SignupUser = (input: SignupInput) => Promise<OutboxRow | undefined>;

/** Most signups one statement takes; a busy service's batches are far smaller (a few per event-loop turn). */
const SIGNUP_BATCH_MAX = 200;

interface SignupRow extends SignupInput {
  traceContext: string | null;
}

/**
 * Signup in one statement, with no explicit transaction: creates the user, or re-arms an unverified one whose last
 * verification email was queued over 60 s ago; then, only for that case, claims the 60 s throttle of the address's
 * throttle key; and records the verification job in the outbox when both agreed. Concurrent signups serialise on the
 * unique email and on the throttle key, so they agree on a single email.
 *
 * The statement takes the signups of several callers as arrays.
 * LOCK ORDER: user rows by email, then throttle rows by throttle key, each in `collate "C"` order, so two statements
 * (two batches, two processes) holding overlapping addresses in any order cannot deadlock
 * (test/db/signup-lock-order.test.ts races them). Within one statement no two rows share an email or a throttle key
 * (a statement updates a row once): the batcher's keys keep such callers for a later statement.
 */
export function signupUsersStatement(
  data: DataLayer,
  verificationJob: OutboxJob<{ userId: string }>,
): (rows: readonly SignupRow[]) => Promise<(OutboxRow | undefined)[]> {
  const run = data.prepared.compile(
    ['emails', 'names', 'throttleKeys', 'traceContexts'],
    (batch: { emails: string[]; names: (string | null)[]; throttleKeys: string[]; traceContexts: (string | null)[] }) =>
      sql<OutboxRow & { email: string }>`
          with input as (
            select * from unnest(${batch.emails}::text[], ${batch.names}::text[], ${batch.throttleKeys}::text[],
                                 ${batch.traceContexts}::jsonb[]) as input(email, name, throttle_key, trace_context)
          ),
          due as (
            insert into users (email, name)
            select email, name from input order by email collate "C"
            on conflict (email) do update set verification_requested_at = now()
              where users.verified_at is null and users.verification_requested_at <= now() - interval '60 seconds'
            returning id, email
          ),
          -- Reads due: the shared throttle is claimed only for an address that would get an email.
          throttle as (
            insert into signup_throttle (address_key)
            select input.throttle_key from due join input using (email) order by input.throttle_key collate "C"
            on conflict (address_key) do update set last_queued_at = now()
              where signup_throttle.last_queued_at <= now() - interval '60 seconds'
            returning address_key
          ),
          -- The job's payload, {userId}, is built here because the id exists only inside this statement.
          -- trace_context is the request's trace (null when tracing is off): a relay publish still joins it.
          queued as (
            ${outboxInsertSql(verificationJob, {
              payload: { userId: sql`due.id::text` },
              traceContext: sql`input.trace_context`,
              from: sql`due join input using (email) join throttle on throttle.address_key = input.throttle_key`,
            })}
          )
          select queued.id, queued.queue, queued.job_name, queued.payload, due.email
          from queued join due on due.id::text = queued.payload->>'userId'`,
  );
  return async (rows) => {
    const queued = await run({
      emails: rows.map((row) => row.email),
      names: rows.map((row) => row.name),
      throttleKeys: rows.map((row) => row.throttleKey),
      traceContexts: rows.map((row) => row.traceContext),
    });
    const byEmail = new Map(queued.map(({ email, ...row }) => [email, row]));
    return rows.map((row) => byEmail.get(row.email));
  };
}

/**
 * signupUser for concurrent callers: the signups of one event-loop turn share one statement (signupUsersStatement),
 * prepared once per connection; every caller still returns only after the commit that holds its outbox row.
 * With DB_BATCHING=off each signup is a statement of its own.
 */
export function prepareSignupUser(data: DataLayer, verificationJob: OutboxJob<{ userId: string }>): SignupUser {
  const statement = signupUsersStatement(data, verificationJob);
  const signup = createStatementBatcher<SignupRow, OutboxRow | undefined>(data, {
    maxBatch: SIGNUP_BATCH_MAX,
    keysOf: (row) => [`email:${row.email}`, `throttle:${row.throttleKey}`],
    run: statement,
  });
  return (input) => {
    const traceContext = activeTraceContext();
    return signup({ ...input, traceContext: traceContext === null ? null : JSON.stringify(traceContext) });
  };
}
