import { sql } from 'kysely';
import { compileOnce, type Db } from '../core/db.js';
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

/**
 * Signup in one statement, with no explicit transaction: creates the user, or
 * re-arms an unverified one whose last verification email was queued over
 * 60 s ago; then, only for that case, claims the 60 s throttle of the address
 * with its `+tag` removed (so `victim+1@x` and `victim+2@x` share one); and
 * records the `email-verification` job in the outbox when both agreed.
 * Resolves to the outbox row when an email is due, undefined otherwise
 * (verified, or throttled). Concurrent signups serialise on the unique email
 * and on the throttle key, so they agree on a single email.
 * Compiled once: this is the hottest statement errand runs.
 */
export function prepareSignupUser(db: Db): SignupUser {
  const run = compileOnce(
    db,
    ['email', 'name', 'throttleKey', 'traceContext'],
    (qb, user: { email: string; name: string | null; throttleKey: string; traceContext: string | null }) =>
      qb
        .with('due', (cte) =>
          cte
            .insertInto('users')
            .values({ email: user.email, name: user.name })
            .onConflict((oc) =>
              oc
                .column('email')
                .doUpdateSet({ verification_requested_at: sql`now()` })
                .where('users.verified_at', 'is', null)
                .where('users.verification_requested_at', '<=', sql<Date>`now() - interval '60 seconds'`),
            )
            .returning('id'),
        )
        // Reads `due`: the shared throttle is claimed only when this address would get an email.
        .with('throttle', (cte) =>
          cte
            .insertInto('signup_throttle')
            .columns(['address_key'])
            .expression((eb) => eb.selectFrom('due').select(sql.val(user.throttleKey).as('address_key')))
            .onConflict((oc) =>
              oc
                .column('address_key')
                .doUpdateSet({ last_queued_at: sql`now()` })
                .where('signup_throttle.last_queued_at', '<=', sql<Date>`now() - interval '60 seconds'`),
            )
            .returning('address_key'),
        )
        .insertInto('outbox')
        .columns(['queue', 'job_name', 'payload', 'trace_context'])
        .expression((eb) =>
          eb.selectFrom(['due', 'throttle']).select([
            sql.val(EMAIL_QUEUE).as('queue'),
            sql.val(EMAIL_VERIFICATION_JOB).as('job_name'),
            // The job's declared payload, {userId}: built here because the id exists only inside this statement.
            sql`jsonb_build_object('userId', due.id::text)`.as('payload'),
            // The request's trace (null when tracing is off): a relay publish still joins it.
            sql<string | null>`${user.traceContext}::jsonb`.as('trace_context'),
          ]),
        )
        .returning(['id', 'queue', 'job_name', 'payload']),
  );
  return async (user) => {
    const traceContext = activeTraceContext();
    return (
      await run({
        email: user.email,
        name: user.name,
        throttleKey: signupThrottleKey(user.email),
        traceContext: traceContext === null ? null : JSON.stringify(traceContext),
      })
    )[0];
  };
}

export async function findUserById(db: Db, id: string) {
  return db.selectFrom('users').select(['id', 'email', 'name', 'verified_at']).where('id', '=', id).executeTakeFirst();
}

export async function insertVerificationToken(db: Db, token: { userId: string; hash: Buffer; expiresAt: Date }): Promise<void> {
  await db
    .insertInto('email_verification_tokens')
    .values({ token_hash: token.hash, user_id: token.userId, expires_at: token.expiresAt, used_at: null })
    .execute();
}

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
