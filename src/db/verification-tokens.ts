import { sql } from 'kysely';
import { createStatementBatcher } from './batch.js';
import type { DataLayer } from './pool.js';
import type { Db } from './schema.js';
import { suppressionReasonOf, type SuppressionReason } from './suppressions.js';

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

/** `suppressed`: the address's entry in the suppression list (its reason), read by the same statement; null when none. */
export type VerificationRecipient = { id: string; email: string; name: string | null; suppressed: SuppressionReason | null };
export type StoreVerificationToken = (token: VerificationTokenRequest) => Promise<VerificationRecipient | undefined>;

/**
 * Stores a verification token for the user, only while the user exists and is unverified, and returns the
 * address to send it to: one statement (one round trip, one commit) for what the email job needs before it
 * sends, and whether the suppression list holds that address (folded in: no round trip of its own). Undefined
 * when there is nothing to send any more (user gone or already verified). Concurrent email
 * jobs share statements, one user at most once per statement. It inserts new token rows only (no row of another
 * caller is locked), so it needs no lock order.
 */
export function prepareStoreVerificationToken(data: DataLayer): StoreVerificationToken {
  // Compiled once, a named prepared statement: a worker runs it for every verification email.
  const run = data.prepared.compile(
    ['userIds', 'hashes', 'expiresAts'],
    (batch: { userIds: string[]; hashes: Buffer[]; expiresAts: Date[] }) =>
      sql<VerificationRecipient>`
        with input as (
          select * from unnest(${batch.userIds}::bigint[], ${batch.hashes}::bytea[], ${batch.expiresAts}::timestamptz[])
            as input(user_id, token_hash, expires_at)
        ), recipient as (
          select users.id, users.email, users.name, input.token_hash, input.expires_at,
            ${suppressionReasonOf(sql.ref('users.email'))} as suppressed
          from input join users on users.id = input.user_id
          where users.verified_at is null
        ), stored as (
          insert into email_verification_tokens (token_hash, user_id, expires_at)
          select token_hash, id, expires_at from recipient
          returning user_id
        )
        select recipient.id::text as id, recipient.email, recipient.name, recipient.suppressed
        from recipient join stored on stored.user_id = recipient.id`,
  );
  const store = createStatementBatcher<VerificationTokenRequest, VerificationRecipient | undefined>(data, {
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
