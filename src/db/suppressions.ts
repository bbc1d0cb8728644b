import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { Db } from './schema.js';
import { createStatementBatcher } from './batch.js';
import { deleteOldRows } from './old-rows.js';
import type { DataLayer } from './pool.js';

/** What a provider's event means for errand; `ignored` is every other event type (never stored). */
export type EmailEventKind = 'hard_bounce' | 'soft_bounce' | 'complaint' | 'ignored';
export type ActedEventKind = Exclude<EmailEventKind, 'ignored'>;
export type SuppressionReason = 'hard-bounce' | 'complaint' | 'soft-bounces' | 'manual';
export const SUPPRESSION_REASONS: readonly SuppressionReason[] = ['hard-bounce', 'complaint', 'soft-bounces', 'manual'];

/** Tables of migration 008, added to the Database type where they are used. */
export type SuppressionTables = {
  email_events: {
    provider: string;
    event_id: string;
    email: string;
    kind: ActedEventKind;
    occurred_at: Date;
    received_at: Date;
  };
  suppressions: { email: string; reason: SuppressionReason; source: string; created_at: Date };
  suppression_lifts: { email: string; lifted_at: Date };
  email_webhook_tokens: { provider: string; token: string; signed_at: Date };
};
type SuppressionDb = Kysely<SuppressionTables>;
const tables = (db: Db): SuppressionDb => (db as unknown as Kysely<object>).withTables<SuppressionTables>();

/** Addresses are matched without regard to case: stored and looked up lower-cased. */
export function normaliseEmail(email: string): string {
  return email.trim().toLowerCase();
}

export interface EmailEventRow {
  provider: string;
  eventId: string;
  email: string;
  kind: ActedEventKind;
  at: Date;
}

export interface SoftBouncePolicy {
  /** Soft bounces of one address within the window that suppress it (EMAIL_SOFT_BOUNCE_LIMIT). */
  limit: number;
  /** EMAIL_SOFT_BOUNCE_WINDOW_DAYS */
  windowDays: number;
}

/** A one-use token that came with a delivery (Mailgun's), stored with the events so the two stand or fall together. */
export interface DeliveryToken {
  provider: string;
  token: string;
  signedAt: Date;
}

export interface Suppressed {
  email: string;
  reason: SuppressionReason;
}

export type RecordResult =
  | { replayed: true }
  | {
      replayed: false;
      /** The events not seen before (a repeated delivery's are left out): what the metrics count. */
      recorded: EmailEventRow[];
      /** Addresses newly suppressed by these events. */
      suppressed: Suppressed[];
    };

// Class id for pg_advisory_xact_lock(int, int): errand's per-address soft-bounce count.
const SOFT_BOUNCE_LOCK_CLASS = 27_008;
/** Tokens older than this cannot come back (their timestamp is refused after 300 s): pruned as new ones arrive. */
const TOKEN_KEEP = '15 minutes';

/**
 * Records one delivery's bounces and complaints, once each, and suppresses what they call for, in one transaction:
 * a hard bounce or a complaint at once; soft bounces when the address has `policy.limit` of them within the window,
 * counting none from before its last lift. A delivery's token, when it has one, is stored in the same transaction:
 * a token seen before answers `replayed` and nothing is recorded.
 *
 * Soft-bounced addresses are locked (advisory, in address order) before counting, so two deliveries bouncing the
 * same address at once cannot each count one short of the limit.
 */
export async function recordEmailEvents(
  db: Db,
  events: readonly EmailEventRow[],
  policy: SoftBouncePolicy,
  token?: DeliveryToken,
): Promise<RecordResult> {
  if (events.length === 0 && !token) return { replayed: false, recorded: [], suppressed: [] };
  return db.transaction().execute(async (trx) => {
    if (token) {
      const { rows } = await sql<{ token: string }>`
        with pruned as (
          delete from email_webhook_tokens where (provider, token) in (
            select provider, token from email_webhook_tokens
            where signed_at < now() - ${TOKEN_KEEP}::interval limit 100 for update skip locked))
        insert into email_webhook_tokens (provider, token, signed_at) values (${token.provider}, ${token.token}, ${token.signedAt})
        on conflict do nothing returning token`.execute(trx);
      if (rows.length === 0) return { replayed: true } as const;
    }
    if (events.length === 0) return { replayed: false, recorded: [], suppressed: [] } as const;

    const softAddresses = [...new Set(events.filter((e) => e.kind === 'soft_bounce').map((e) => e.email))].sort();
    if (softAddresses.length > 0) {
      await sql`
        select pg_advisory_xact_lock(${SOFT_BOUNCE_LOCK_CLASS}, hashtext(email))
        from (select distinct unnest(${softAddresses}::text[]) as email order by 1) addresses`.execute(trx);
    }

    const { rows: inserted } = await sql<{ provider: string; event_id: string; email: string; kind: ActedEventKind; occurred_at: Date }>`
      insert into email_events (provider, event_id, email, kind, occurred_at)
      select * from unnest(
        ${events.map((e) => e.provider)}::text[], ${events.map((e) => e.eventId)}::text[], ${events.map((e) => e.email)}::text[],
        ${events.map((e) => e.kind)}::text[], ${events.map((e) => e.at.toISOString())}::timestamptz[])
      on conflict do nothing
      returning provider, event_id, email, kind, occurred_at`.execute(trx);
    const recorded: EmailEventRow[] = inserted.map((row) => ({
      provider: row.provider,
      eventId: row.event_id,
      email: row.email,
      kind: row.kind,
      at: row.occurred_at,
    }));

    // Candidates in event order: the first event for an address names its reason and source.
    const candidates = new Map<string, { reason: SuppressionReason; source: string }>();
    for (const event of recorded) {
      if (event.kind === 'soft_bounce' || candidates.has(event.email)) continue;
      candidates.set(event.email, { reason: event.kind === 'complaint' ? 'complaint' : 'hard-bounce', source: event.provider });
    }
    const newSoft = [...new Set(recorded.filter((e) => e.kind === 'soft_bounce').map((e) => e.email))];
    if (newSoft.length > 0) {
      const { rows } = await sql<{ email: string }>`
        select e.email from email_events e left join suppression_lifts l on l.email = e.email
        where e.kind = 'soft_bounce' and e.email = any(${newSoft}::text[])
          and e.occurred_at > now() - make_interval(days => ${policy.windowDays})
          and (l.lifted_at is null or e.occurred_at > l.lifted_at)
        group by e.email having count(*) >= ${policy.limit}`.execute(trx);
      for (const { email } of rows) {
        if (candidates.has(email)) continue;
        const source = recorded.find((e) => e.email === email && e.kind === 'soft_bounce')!.provider;
        candidates.set(email, { reason: 'soft-bounces', source });
      }
    }
    if (candidates.size === 0) return { replayed: false, recorded, suppressed: [] } as const;

    const entries = [...candidates];
    // An address already suppressed keeps its first reason.
    const { rows: suppressed } = await sql<Suppressed>`
      insert into suppressions (email, reason, source)
      select * from unnest(${entries.map(([email]) => email)}::text[], ${entries.map(([, c]) => c.reason)}::text[],
        ${entries.map(([, c]) => c.source)}::text[])
      on conflict (email) do nothing
      returning email, reason`.execute(trx);
    return { replayed: false, recorded, suppressed } as const;
  });
}

/**
 * Retention: deletes at most `limit` stored events received before `before`, except soft bounces that still count
 * toward the limit (received or occurred within the last `softBounceWindowDays`, on the database's clock, as the
 * count's own window). Returns how many it deleted.
 */
export async function deleteOldEmailEvents(db: Db, before: Date, softBounceWindowDays: number, limit: number): Promise<number> {
  const isOld = sql<boolean>`received_at < ${before}
    and (kind <> 'soft_bounce' or greatest(received_at, occurred_at) < now() - make_interval(days => ${softBounceWindowDays}))`;
  return deleteOldRows(db, 'email_events', ['provider', 'event_id'], isOld, limit);
}

/**
 * Retention: deletes at most `limit` delivery tokens signed before `before`. recordEmailEvents prunes them as new ones
 * arrive; this clears what is left when none arrive. Never one younger than TOKEN_KEEP, whatever `before` says: a
 * replay within the accepted timestamp window must still find its token. Returns how many it deleted.
 */
export async function deleteOldDeliveryTokens(db: Db, before: Date, limit: number): Promise<number> {
  const isOld = sql<boolean>`signed_at < least(${before}::timestamptz, now() - ${TOKEN_KEEP}::interval)`;
  return deleteOldRows(db, 'email_webhook_tokens', ['provider', 'token'], isOld, limit);
}

/** `{reason}` when the address (any case) is suppressed, else null: one primary-key lookup (admin routes, tests). */
export async function findSuppression(db: Db, email: string): Promise<{ reason: SuppressionReason } | null> {
  const row = await tables(db).selectFrom('suppressions').select('reason').where('email', '=', normaliseEmail(email)).executeTakeFirst();
  return row ? { reason: row.reason } : null;
}

/** Most addresses one check statement takes (a worker runs at most EMAIL_CONCURRENCY jobs at once). */
const SUPPRESSION_CHECK_BATCH_MAX = 500;

/**
 * The suppression reason of an address column, as a subquery another statement embeds (the check folded into a read
 * it already makes). The column must hold addresses as stored, trimmed and lower-cased (normaliseEmail), as
 * users.email and orders.email do.
 */
export function suppressionReasonOf(storedEmail: RawBuilder<unknown>): RawBuilder<SuppressionReason | null> {
  return sql<SuppressionReason | null>`(select reason from suppressions where suppressions.email = ${storedEmail})`;
}

/** The email worker's check before a send: the address's suppression reason, or null; shared by concurrent jobs. */
export type SuppressionCheck = (email: string) => Promise<SuppressionReason | null>;

/**
 * The check before a send for a composer whose statement does not fold it in (errand's two composers do: the token
 * statement and the order read return the address's reason, at no extra round trip). A named prepared statement
 * shared by concurrent jobs (DB_BATCHING), like the sent-email check. Reads only: no lock order to keep. As a
 * statement of its own per job, the check cost the worker ~25 % of its throughput at concurrency 50
 * (docs/BENCHMARKS.md), hence the folding.
 */
export function createSuppressionCheck(data: DataLayer): SuppressionCheck {
  const selectSuppressed = data.prepared.compile(['emails'], (params: { emails: string[] }, db) =>
    tables(db)
      .selectFrom('suppressions')
      .select(['email', 'reason'])
      .where(sql<boolean>`email = any(${params.emails}::text[])`),
  );
  return createStatementBatcher<string, SuppressionReason | null>(data, {
    maxBatch: SUPPRESSION_CHECK_BATCH_MAX,
    async run(emails) {
      const addresses = emails.map(normaliseEmail);
      const rows = await selectSuppressed({ emails: [...new Set(addresses)] });
      const reasons = new Map(rows.map((row) => [row.email, row.reason]));
      return addresses.map((address) => reasons.get(address) ?? null);
    },
  });
}

export interface SuppressionItem {
  email: string;
  reason: SuppressionReason;
  source: string;
  createdAt: Date;
}

export interface SuppressionPage {
  items: SuppressionItem[];
  /** Pass back as `cursor` for the next page; null on the last one. */
  nextCursor: string | null;
}

/** C0 controls but tab, DEL and C1 controls, as core/schemas.ts's SafeString refuses them. */
export function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if ((code < 0x20 && code !== 0x09) || (code >= 0x7f && code <= 0x9f)) return true;
  }
  return false;
}

/** The keyset of the last row of a page: created_at as PostgreSQL prints it (microseconds kept) and the address. */
function encodeCursor(createdAt: string, email: string): string {
  return Buffer.from(JSON.stringify([createdAt, email]), 'utf8').toString('base64url');
}

/** undefined when the cursor is not one this module made. */
export function decodeCursor(cursor: string): { createdAt: string; email: string } | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (!Array.isArray(value) || value.length !== 2 || !value.every((part) => typeof part === 'string')) return undefined;
    const [createdAt, email] = value as [string, string];
    if (!/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2}){0,2}$/.test(createdAt) || hasControlCharacter(email))
      return undefined;
    return { createdAt, email };
  } catch {
    return undefined;
  }
}

const toItem = (row: { email: string; reason: SuppressionReason; source: string; created_at: Date }): SuppressionItem => ({
  email: row.email,
  reason: row.reason,
  source: row.source,
  createdAt: row.created_at,
});

/** Newest first, `limit` at a time, after `cursor` (from the previous page). */
export async function listSuppressions(
  db: Db,
  options: { limit: number; cursor?: { createdAt: string; email: string } },
): Promise<SuppressionPage> {
  let query = tables(db)
    .selectFrom('suppressions')
    .select(['email', 'reason', 'source', 'created_at', sql<string>`created_at::text`.as('created_at_text')])
    .orderBy('created_at', 'desc')
    .orderBy('email', 'desc')
    .limit(options.limit + 1);
  if (options.cursor) {
    const { createdAt, email } = options.cursor;
    query = query.where(sql<boolean>`(created_at, email) < (${createdAt}::timestamptz, ${email})`);
  }
  const rows = await query.execute();
  const page = rows.slice(0, options.limit);
  const last = page.at(-1);
  return {
    items: page.map(toItem),
    nextCursor: rows.length > options.limit && last ? encodeCursor(last.created_at_text, last.email) : null,
  };
}

export async function getSuppression(db: Db, email: string): Promise<SuppressionItem | undefined> {
  const row = await tables(db)
    .selectFrom('suppressions')
    .select(['email', 'reason', 'source', 'created_at'])
    .where('email', '=', normaliseEmail(email))
    .executeTakeFirst();
  return row && toItem(row);
}

/** Suppresses an address by hand (`manual`, source `admin`); one already suppressed keeps its reason and date. */
export async function putSuppression(db: Db, email: string): Promise<SuppressionItem> {
  const address = normaliseEmail(email);
  // Twice at most: a PUT racing another for the same address sees neither its own row nor the other's (not yet committed
  // when its statement began); the second run sees the winner's.
  for (let attempt = 0; ; attempt += 1) {
    const row = await putOnce(db, address);
    if (row) return toItem(row);
    if (attempt > 0) throw new Error('suppression neither added nor found');
  }
}

async function putOnce(db: Db, address: string) {
  const { rows } = await sql<{ email: string; reason: SuppressionReason; source: string; created_at: Date }>`
    with added as (
      insert into suppressions (email, reason, source) values (${address}, 'manual', 'admin')
      on conflict (email) do nothing returning email, reason, source, created_at)
    select * from added
    union all
    select email, reason, source, created_at from suppressions where email = ${address} and not exists (select 1 from added)`.execute(db);
  return rows[0];
}

/** Lifts a suppression: errand may email the address again, and its soft bounces so far no longer count. False when there was none. */
export async function deleteSuppression(db: Db, email: string): Promise<boolean> {
  const address = normaliseEmail(email);
  const { rows } = await sql<{ email: string }>`
    with lifted as (delete from suppressions where email = ${address} returning email),
    marked as (
      insert into suppression_lifts (email, lifted_at) select email, now() from lifted
      on conflict (email) do update set lifted_at = excluded.lifted_at)
    select email from lifted`.execute(db);
  return rows.length > 0;
}
