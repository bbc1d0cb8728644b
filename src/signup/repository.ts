import { sql, type Transaction } from 'kysely';
import type { Database, Db } from '../core/db.js';

/**
 * Creates the user, or re-arms an unverified one whose last verification email
 * was queued over 60 s ago. Returns the id when a verification email is due,
 * null otherwise (verified, or throttled). One statement, so concurrent
 * signups for one address agree on a single email.
 */
export async function upsertUserForVerification(
  trx: Transaction<Database>,
  user: { email: string; name: string | null },
): Promise<string | null> {
  const row = await trx
    .insertInto('users')
    .values({ email: user.email, name: user.name })
    .onConflict((oc) =>
      oc
        .column('email')
        .doUpdateSet({ verification_requested_at: sql`now()` })
        .where('users.verified_at', 'is', null)
        .where('users.verification_requested_at', '<=', sql<Date>`now() - interval '60 seconds'`),
    )
    .returning('id')
    .executeTakeFirst();
  return row?.id ?? null;
}

export async function findUserById(db: Db, id: string) {
  return db.selectFrom('users').select(['id', 'email', 'name', 'verified_at']).where('id', '=', id).executeTakeFirst();
}

export async function insertVerificationToken(db: Db, token: { userId: string; hash: Buffer; expiresAt: Date }): Promise<void> {
  await db.insertInto('email_verification_tokens').values({ token_hash: token.hash, user_id: token.userId, expires_at: token.expiresAt, used_at: null }).execute();
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
    await trx.updateTable('users').set({ verified_at: sql`coalesce(verified_at, now())` }).where('id', '=', token.user_id).execute();
    return true;
  });
}
