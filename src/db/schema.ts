import type { ColumnType, Generated, Kysely } from 'kysely';
import { Type, type Static } from 'typebox';
import type { TraceContext } from '../core/tracing.js';

/** The table types: what each column holds when read, inserted and updated. */

export interface UsersTable {
  id: Generated<string>;
  email: string;
  name: string | null;
  verified_at: Date | null;
  verification_requested_at: Generated<Date>;
  created_at: Generated<Date>;
}

export interface EmailVerificationTokensTable {
  token_hash: Buffer;
  user_id: string;
  expires_at: Date;
  used_at: Date | null;
  created_at: Generated<Date>;
}

export interface OutboxTable {
  id: Generated<string>;
  queue: string;
  job_name: string;
  payload: unknown;
  created_at: Generated<Date>;
  published_at: Date | null;
  /** Failed relay passes (Redis up); at OUTBOX_MAX_FAILURES the relay skips the row. */
  failures: Generated<number>;
  last_error: string | null;
  /** W3C trace context of the producing request (tracing on), carried into the job. */
  trace_context: ColumnType<TraceContext | null, string | null | undefined, string | null>;
}

export interface SentEmailsTable {
  job_id: string;
  sent_at: Generated<Date>;
  /** The Message-ID the accepted message carried (migration 007; null for records written before it). */
  message_id: ColumnType<string | null, string | null | undefined, string | null>;
}

/** The signup throttle per address with any `+tag` removed (migration 004). */
export interface SignupThrottleTable {
  address_key: string;
  last_queued_at: Generated<Date>;
}

/** Every status an order row can hold (the CHECK of migration 002), as a TypeBox schema for route and job payloads. */
export const OrderStatusSchema = Type.Union([
  Type.Literal('pending'),
  Type.Literal('paid'),
  Type.Literal('failed'),
  Type.Literal('expired'),
]);
export type OrderStatus = Static<typeof OrderStatusSchema>;
/** The one list of order statuses: everything else derives from it. */
export const ORDER_STATUSES: readonly OrderStatus[] = OrderStatusSchema.anyOf.map((literal) => literal.const);

export interface OrdersTable {
  id: Generated<string>;
  email: string;
  // bigint arrives as a string; repositories convert it (amounts stay below 2^53).
  amount: ColumnType<string, number, number>;
  currency: string;
  status: ColumnType<OrderStatus, OrderStatus | undefined, OrderStatus>;
  provider_ref: string;
  paid_at: Date | null;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
  /** When the reconciliation sweep last asked the provider (null: never). */
  last_checked_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  /**
   * When a tracking email was queued for the order (migration 007): set by the settle statement that makes it paid
   * and by the backfill, so the backfill never queues a second one once retention pruned the outbox and send records.
   */
  tracking_email_queued_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface PaymentEventsTable {
  event_id: string;
  type: string;
  /** Null for an event type errand does not handle that carries no providerRef. */
  provider_ref: string | null;
  order_id: string | null;
  transitioned: boolean;
  received_at: Generated<Date>;
}

export interface Database {
  users: UsersTable;
  email_verification_tokens: EmailVerificationTokensTable;
  outbox: OutboxTable;
  sent_emails: SentEmailsTable;
  orders: OrdersTable;
  payment_events: PaymentEventsTable;
  signup_throttle: SignupThrottleTable;
}

export type Db = Kysely<Database>;
