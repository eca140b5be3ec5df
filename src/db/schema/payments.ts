import {
  index,
  integer,
  primaryKey,
  sqliteTable,
  text,
  uniqueIndex,
} from "drizzle-orm/sqlite-core";

/**
 * Payment intents created through the API, one row per Stripe PaymentIntent (`pi_…`). `owner` is
 * who may read it: `user:<id>` (a user, or an API key acting for that user) or `key:<id>` (an
 * ownerless bootstrap key); erasure replaces it with the erased user's pseudonym and strips the
 * personal fields, keeping the row for accounting. `seq` orders the list and is its cursor.
 * `status_event_at` is the `created` time (seconds) of the Stripe event that last set the status:
 * out-of-order events are compared against it (see modules/payments/status.ts).
 */
export const payments = sqliteTable(
  "payments",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    id: text("id").notNull(),
    owner: text("owner").notNull(),
    amount: integer("amount").notNull(),
    currency: text("currency").notNull(),
    status: text("status").notNull(),
    statusEventAt: integer("status_event_at").notNull().default(0),
    amountRefunded: integer("amount_refunded").notNull().default(0),
    /** While an admin refund is with Stripe: when it started (one refund of a payment at a time). */
    refundStartedAt: integer("refund_started_at"),
    /**
     * A refund whose outcome Palisade never heard (Stripe timed out, answered a server error, or
     * could not be read), as JSON `{key, amount, before}`: its Stripe idempotency key, its amount
     * and the refunded total it started from. The next refund of the payment first asks Stripe
     * whether it was made (modules/payments/undecided-refund.ts). Not sealed, as the claim is not.
     */
    refundUndecided: text("refund_undecided"),
    disputedAt: integer("disputed_at"),
    clientSecret: text("client_secret"),
    description: text("description"),
    customerEmail: text("customer_email"),
    /** JSON object of strings, as sent to Stripe. */
    metadata: text("metadata"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    /** HMAC over what the row says was paid, by whom, and what happened to it (payments/seal.ts). */
    seal: text("seal"),
  },
  (table) => [
    uniqueIndex("payments_id").on(table.id),
    index("payments_owner_seq").on(table.owner, table.seq),
    // An owner's intents of the last day, for its daily cap: read by their time, not by `seq`,
    // which is not sealed (rows written into the file with a higher one pushed real ones out of
    // the count: probe 85a F1).
    index("payments_owner_created").on(table.owner, table.createdAt),
  ],
);

export const IDEMPOTENCY_STATES = ["pending", "done"] as const;

/**
 * Idempotency keys of `POST /api/payments/intents`, scoped to their owner (the same key from two
 * owners is two rows). A request claims its key by inserting the `pending` row (in a BEGIN
 * IMMEDIATE transaction, so one process of many wins) before it calls Stripe; the winner stores
 * the response and marks it `done`; a failure deletes the claim. Kept 24 hours, as Stripe keeps its
 * own keys.
 */
export const paymentIdempotencyKeys = sqliteTable(
  "payment_idempotency_keys",
  {
    owner: text("owner").notNull(),
    key: text("key").notNull(),
    /** SHA-256 of the canonical request body. */
    requestHash: text("request_hash").notNull(),
    state: text("state", { enum: IDEMPOTENCY_STATES }).notNull(),
    /** The first response (JSON), once `done`. */
    response: text("response"),
    claimedAt: integer("claimed_at").notNull(),
    /** HMAC over the owner, key, request hash, state and response (payments/seal.ts). */
    seal: text("seal"),
  },
  (table) => [
    primaryKey({ columns: [table.owner, table.key] }),
    index("payment_idempotency_claimed").on(table.claimedAt),
  ],
);
