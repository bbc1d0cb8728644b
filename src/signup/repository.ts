import { sql } from 'kysely';
import { compileOnce, createStatementBatcher, type Db } from '../core/db.js';
import { EMAIL_QUEUE, EMAIL_VERIFICATION_JOB } from '../email/jobs.js';
import type { OutboxRow } from '../outbox/producer.js';
import { activeTraceContext } from '../core/tracing.js';

/** The throttle key of an address: lower-cased, with any `+tag` removed from the local part (the email still goes to the address as given). */
export function signupThrottleKey(email: string): string {
  const at = email.lastIndexOf('@');
  if (at < 0) return email.toLowerCase();
  const local = email.slice(0, at);
  const plus = local.indexOf('+');
  return `${plus < 0 ? local : local.slice(0, plus)}${email.slice(at)}`.toLowerCase();
}

export type SignupUser = (user: { email: string; name: string | null }) => Promise<OutboxRow | undefined>;

interface SignupItem {
  email: string;
  name: string | null;
  throttleKey: string;
  traceContext: string | null;
}

/** Most signups one statement takes; a busy service's batches are far smaller (a few per event-loop turn). */
const SIGNUP_BATCH_MAX = 200;

/**
 * Signup in one statement, with no explicit transaction: creates the user, or
 * re-arms an unverified one whose last verification email was queued over
 * 60 s ago; then, only for that case, claims the 60 s throttle of the address
 * with its `+tag` removed (so `victim+1@x` and `victim+2@x` share one); and
 * records the `email-verification` job in the outbox when both agreed.
 * Resolves to the outbox row when an email is due, undefined otherwise
 * (verified, or throttled). Concurrent signups serialise on the unique email
 * and on the throttle key, so they agree on a single email.
 *
 * Concurrent callers share statements (createStatementBatcher): each statement takes the signups of a few requests as
 * arrays. Within one, no two share an address or a throttle key (a statement updates a row once; the later
 * caller waits for the next statement and finds the throttle claimed, as it would have one at a time), and
 * rows are locked in address and key order, so two statements cannot deadlock. Every caller still returns only
 * after the commit that holds its outbox row.
 * Compiled once: this is the hottest statement errand runs.
 */
export function prepareSignupUser(db: Db): SignupUser {
  const run = compileOnce(
    db,
    ['emails', 'names', 'throttleKeys', 'traceContexts'],
    (db, batch: { emails: string[]; names: (string | null)[]; throttleKeys: string[]; traceContexts: (string | null)[] }) => ({
      compile: () =>
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
          queued as (
            insert into outbox (queue, job_name, payload, trace_context)
            -- The job's declared payload, {userId}: built here because the id exists only inside this statement.
            -- trace_context is the request's trace (null when tracing is off): a relay publish still joins it.
            select ${EMAIL_QUEUE}, ${EMAIL_VERIFICATION_JOB}, jsonb_build_object('userId', due.id::text), input.trace_context
            from due join input using (email) join throttle on throttle.address_key = input.throttle_key
            returning id, queue, job_name, payload
          )
          select queued.id, queued.queue, queued.job_name, queued.payload, due.email
          from queued join due on due.id::text = queued.payload->>'userId'`.compile(db),
    }),
  );
  const signupBatch = createStatementBatcher<SignupItem, OutboxRow | undefined>({
    maxBatch: SIGNUP_BATCH_MAX,
    keysOf: (item) => [`email:${item.email}`, `throttle:${item.throttleKey}`],
    async run(items) {
      const rows = await run({
        emails: items.map((item) => item.email),
        names: items.map((item) => item.name),
        throttleKeys: items.map((item) => item.throttleKey),
        traceContexts: items.map((item) => item.traceContext),
      });
      const byEmail = new Map(rows.map(({ email, ...row }) => [email, row]));
      return items.map((item) => byEmail.get(item.email));
    },
  });
  return async (user) => {
    const traceContext = activeTraceContext();
    return signupBatch({
      email: user.email,
      name: user.name,
      throttleKey: signupThrottleKey(user.email),
      traceContext: traceContext === null ? null : JSON.stringify(traceContext),
    });
  };
}

export interface VerificationTokenRequest {
  userId: string;
  hash: Buffer;
  expiresAt: Date;
}

export async function insertVerificationToken(db: Db, token: VerificationTokenRequest): Promise<void> {
  await db
    .insertInto('email_verification_tokens')
    .values({ token_hash: token.hash, user_id: token.userId, expires_at: token.expiresAt, used_at: null })
    .execute();
}

export type VerificationRecipient = { id: string; email: string; name: string | null };
export type StoreVerificationToken = (token: VerificationTokenRequest) => Promise<VerificationRecipient | undefined>;

/**
 * Stores a verification token for the user, only while the user exists and is unverified, and returns the
 * address to send it to: one statement (one round trip, one commit) for what the email job needs before it
 * sends. Undefined when there is nothing to send any more (user gone or already verified). Concurrent email
 * jobs share statements (createStatementBatcher), one user at most once per statement.
 */
export function prepareStoreVerificationToken(db: Db): StoreVerificationToken {
  // Compiled once, a named prepared statement: a worker runs it for every verification email.
  const run = compileOnce(
    db,
    ['userIds', 'hashes', 'expiresAts'],
    (db, batch: { userIds: string[]; hashes: Buffer[]; expiresAts: Date[] }) => ({
      compile: () =>
        sql<VerificationRecipient>`
        with input as (
          select * from unnest(${batch.userIds}::bigint[], ${batch.hashes}::bytea[], ${batch.expiresAts}::timestamptz[])
            as input(user_id, token_hash, expires_at)
        ), recipient as (
          select users.id, users.email, users.name, input.token_hash, input.expires_at
          from input join users on users.id = input.user_id
          where users.verified_at is null
        ), stored as (
          insert into email_verification_tokens (token_hash, user_id, expires_at)
          select token_hash, id, expires_at from recipient
          returning user_id
        )
        select recipient.id::text as id, recipient.email, recipient.name
        from recipient join stored on stored.user_id = recipient.id`.compile(db),
    }),
  );
  const store = createStatementBatcher<VerificationTokenRequest, VerificationRecipient | undefined>({
    maxBatch: 500,
    keysOf: (token) => [token.userId],
    async run(tokens) {
      const rows = await run({
        userIds: tokens.map((token) => token.userId),
        hashes: tokens.map((token) => token.hash),
        expiresAts: tokens.map((token) => token.expiresAt),
      });
      const byId = new Map(rows.map((row) => [row.id, row]));
      return tokens.map((token) => byId.get(token.userId));
    },
  });
  // The payload allows any digits; an id past bigint's range names no user, and must not fail the shared cast.
  return (token) => (BigInt(token.userId) > MAX_BIGINT ? Promise.resolve(undefined) : store(token));
}

const MAX_BIGINT = 2n ** 63n - 1n;

/** Uses the token (once, before expiry) and marks its user verified; false when the token is unknown, used or expired. */
export async function consumeVerificationToken(db: Db, hash: Buffer): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const token = await trx
      .updateTable('email_verification_tokens')
      .set({ used_at: sql`now()` })
      .where('token_hash', '=', hash)
      .where('used_at', 'is', null)
      .where('expires_at', '>', sql<Date>`now()`)
      .returning('user_id')
      .executeTakeFirst();
    if (!token) return false;
    await trx
      .updateTable('users')
      .set({ verified_at: sql`coalesce(verified_at, now())` })
      .where('id', '=', token.user_id)
      .execute();
    return true;
  });
}

/** What a verification token is, read without using it. */
export type VerificationTokenState = 'usable' | 'used' | 'expired' | 'unknown';

/**
 * Reads a token without using it: what a confirm page needs (the address) and what a refusal page
 * should say (used, expired or unknown). Never changes a row, so a link scanner's GET leaves the token usable.
 */
export async function findVerificationToken(db: Db, hash: Buffer): Promise<{ state: VerificationTokenState; email: string | null }> {
  const row = await db
    .selectFrom('email_verification_tokens as t')
    .innerJoin('users as u', 'u.id', 't.user_id')
    .select(['u.email', 't.used_at', sql<boolean>`t.expires_at <= now()`.as('expired')])
    .where('t.token_hash', '=', hash)
    .executeTakeFirst();
  if (!row) return { state: 'unknown', email: null };
  // Used wins over expired: a used token's address is confirmed, which is what the person wants to know.
  const state = row.used_at ? 'used' : row.expired ? 'expired' : 'usable';
  return { state, email: row.email };
}
