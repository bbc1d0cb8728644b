import { randomBytes } from 'node:crypto';
import type { Db, OrderStatus } from '../../src/db/schema.js';
import { ProviderSimulator } from '../../src/reconcile/simulator.js';
import { serveSimulator, type RunningSimulator } from '../../src/reconcile/simulator/server.js';
import type { T } from './helpers.js';

/** The provider simulator as a real HTTP server on a free port, closed at teardown. */
export async function startSimulator(t: T): Promise<{ sim: ProviderSimulator; server: RunningSimulator; url: string }> {
  const sim = new ProviderSimulator();
  const server = await serveSimulator(sim, { port: 0 });
  t.teardown(() => server.close());
  return { sim, server, url: server.url };
}

export interface TestOrder {
  id: string;
  providerRef: string;
  email: string;
  amount: number;
  currency: string;
  status: OrderStatus;
  createdAt: Date;
}

/** Inserts orders directly (fast, with chosen created_at); returned in input order. */
export async function insertOrders(
  db: Db,
  rows: Array<{ ageMinutes: number; status?: OrderStatus; amount?: number; currency?: string; email?: string }>,
): Promise<TestOrder[]> {
  if (rows.length === 0) return [];
  const now = Date.now();
  const values = rows.map((row) => {
    const tag = randomBytes(8).toString('hex');
    return {
      email: row.email ?? `buyer-${tag}@example.com`,
      amount: row.amount ?? 1999,
      currency: row.currency ?? 'USD',
      status: row.status ?? ('pending' as const),
      provider_ref: `pay_${tag}`,
      created_at: new Date(now - row.ageMinutes * 60_000),
      paid_at: row.status === 'paid' ? new Date(now) : null,
    };
  });
  const inserted = await db.insertInto('orders').values(values).returning(['id', 'provider_ref']).execute();
  const idByRef = new Map(inserted.map((row) => [row.provider_ref, row.id]));
  return values.map((v) => ({
    id: idByRef.get(v.provider_ref)!,
    providerRef: v.provider_ref,
    email: v.email,
    amount: v.amount,
    currency: v.currency,
    status: v.status,
    createdAt: v.created_at,
  }));
}
