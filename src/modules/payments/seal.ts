/**
 * @module
 * Payment seals: what keeps someone who can write the database file, but does not hold
 * AUDIT_SECRET_KEY, from making the ledger say something Palisade never wrote. An integration
 * that fulfils orders from `GET /api/payments/:id` trusts the status it reads; an admin refunds
 * what the ledger says was paid; a replayed Idempotency-Key answers with the response stored.
 *
 * So every `payments` row carries a `seal`, an HMAC (db/row-seal.ts, its own key label) over
 * everything a reader is shown or acts on: the intent id, the owner, amount and currency, the
 * status and the time of the Stripe event that set it, the refunded total, the dispute mark, the
 * client secret, the description, customer email and metadata (an order reference there decides
 * what an integration ships), and the times. Every `payment_idempotency_keys`
 * row carries one over its owner, key, request hash, state and stored response. Palisade seals each
 * row it writes and reseals each change it makes to those columns; a row that does not match is
 * treated as absent — 404 to its owner, left out of lists and exports, never refunded, its Stripe
 * events ignored, its stored response never replayed (the key is claimed again, and Stripe replays
 * its own result for it) — and reported once per process: an error line and a `payment.tampered`
 * audit event naming the table and the row (alert `PalisadeDatabaseTampered`). A change Palisade
 * makes to such a row (erasure strips it) never reseals it.
 *
 * The refunds whose outcome Stripe never told (`refund_undecided`, undecided-refund.ts) carry a
 * seal of their own, with the same key, and the payment's seal covers them too once there are any
 * (a payment without any is sealed as before they existed): sealed alone, the list could be
 * emptied in the file, or one of its earlier states written back, and a refund Stripe had made was
 * made again or a new one answered with an old one (probe 61a F3). The lists the release before
 * this one wrote, sealed alone, were put under their payment's seal by migration 0028
 * (undecided-seal-upgrade.ts).
 *
 * Not sealed: the refund claim and `seq`. Changing those can delay a refund or reorder a list; not
 * change what a payment says. A copy of an older row of the same file, seal and all (a rollback),
 * is not detected.
 */
import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import { createRowSealer, oncePerRow, sealMatches } from "../../db/row-seal";
import type { AuditEvent } from "../../plugins/audit/events";

/** The columns a payment's seal covers. */
export interface SealedPayment {
  id: string;
  owner: string;
  amount: number;
  currency: string;
  status: string;
  statusEventAt: number;
  amountRefunded: number;
  disputedAt: number | null;
  clientSecret: string | null;
  description: string | null;
  customerEmail: string | null;
  metadata: string | null;
  createdAt: number;
  updatedAt: number;
  /** The refunds whose outcome Stripe never told, as stored; none when null or absent. */
  refundUndecided?: string | null;
}

/** The columns a payment's seal covered when migration 0017 sealed them (no undecided refunds). */
const SEALED_PAYMENT_COLUMNS_0017 = `id, owner, amount, currency, status,
  status_event_at AS statusEventAt, amount_refunded AS amountRefunded, disputed_at AS disputedAt, client_secret AS clientSecret,
  description, customer_email AS customerEmail, metadata, created_at AS createdAt,
  updated_at AS updatedAt`;

/** The sealed columns of `payments` in SQL, named as SealedPayment names them. */
export const SEALED_PAYMENT_COLUMNS = `${SEALED_PAYMENT_COLUMNS_0017},
  refund_undecided AS refundUndecided`;

/** The columns an idempotency key's seal covers. */
export interface SealedIdempotencyKey {
  owner: string;
  key: string;
  requestHash: string;
  state: string;
  response: string | null;
}

export interface PaymentSeal {
  payment(row: SealedPayment): string;
  idempotencyKey(row: SealedIdempotencyKey): string;
  /** A payment's refunds whose outcome Stripe never told, as stored (undecided-refund.ts). */
  undecidedRefunds(paymentId: string, entries: string): string;
  intact: {
    payment(row: SealedPayment & { seal: string | null }): boolean;
    idempotencyKey(row: SealedIdempotencyKey & { seal: string | null }): boolean;
  };
}

const KEY_LABEL = "palisade payment seal v1";

/** The seal keyed from `auditSecret`. */
export function createPaymentSeal(auditSecret: string): PaymentSeal {
  const mac = createRowSealer(auditSecret, KEY_LABEL);
  const payment = (row: SealedPayment) =>
    mac([
      "payment",
      row.id,
      row.owner,
      row.amount,
      row.currency,
      row.status,
      row.statusEventAt,
      row.amountRefunded,
      row.disputedAt,
      row.clientSecret,
      row.description,
      row.customerEmail,
      row.metadata,
      row.createdAt,
      row.updatedAt,
      ...(row.refundUndecided == null ? [] : ["refund_undecided", row.refundUndecided]),
    ]);
  const idempotencyKey = (row: SealedIdempotencyKey) =>
    mac(["payment_idempotency_key", row.owner, row.key, row.requestHash, row.state, row.response]);
  return {
    payment,
    idempotencyKey,
    undecidedRefunds: (paymentId, entries) =>
      mac(["payment_refunds_undecided", paymentId, entries]),
    intact: {
      payment: (row) => sealMatches(payment(row), row.seal),
      idempotencyKey: (row) => sealMatches(idempotencyKey(row), row.seal),
    },
  };
}

/**
 * How a tampered idempotency key is named in reports: a hash of the key a client chose, so each row
 * is told apart and the key itself is not written out.
 */
export function reportedIdempotencyKey(key: string): string {
  return new Bun.CryptoHasher("sha256")
    .update(`reported idempotency key\n${key}`)
    .digest("hex")
    .slice(0, 16);
}

/**
 * `id`: a payment's id, or an idempotency key's owner; `key`, for an idempotency key, a hash of
 * the key (so each row is reported, and the key a client chose is not written out).
 */
export type PaymentTamperReport = (
  table: "payments" | "payment_idempotency_keys",
  id: string,
  key?: string,
) => void;

/**
 * Reports a tampered payments row once per process (db/row-seal oncePerRow): an error line and a
 * `payment.tampered` audit event naming the table and the row (a payment's id, or an idempotency
 * key's owner; never an amount, a secret or a response).
 */
export function paymentTamperReporter(deps: {
  logger: { error(fields: Record<string, unknown>, message: string): void };
  audit: { record(event: AuditEvent): void };
}): PaymentTamperReport {
  return oncePerRow<"payments" | "payment_idempotency_keys">((table, id, key) => {
    deps.logger.error(
      { table, id, ...(key === undefined ? {} : { key }) },
      "a payments row does not match its seal: it was written into the database file, not by Palisade; it is treated as absent",
    );
    deps.audit.record({
      type: "payment.tampered",
      outcome: "denied",
      actor: "system",
      detail: key === undefined ? { table, id } : { table, id, key },
    });
  });
}

export const PAYMENT_SEALS_MIGRATION = "0017_payment_seals";

/** What the upgrade sealed. */
export interface PaymentsSealedOnUpgrade {
  payments: number;
  idempotencyKeys: number;
}

/**
 * The companion that seals every payment and idempotency key when migration 0017 is applied, in
 * its transaction (db/migrate.ts), as the credentials are with 0013: only the call that applies it
 * seals, so a row written into the file afterwards is treated as absent. A row written into the
 * file before the upgrade is sealed with the rest: a ledger cannot be given up as a reply can.
 */
export function paymentSealing(seal: PaymentSeal): {
  companions: MigrationCompanions;
  sealed(): PaymentsSealedOnUpgrade | null;
} {
  let sealed: PaymentsSealedOnUpgrade | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const rows = sqlite
      .query<SealedPayment, []>(`SELECT ${SEALED_PAYMENT_COLUMNS_0017} FROM payments`)
      .all();
    // By the payment's id (unique): a `seq` past 2^53 is read rounded (another row's, or none).
    const sealPayment = sqlite.prepare("UPDATE payments SET seal = ? WHERE id = ?");
    for (const row of rows) sealPayment.run(seal.payment(row), row.id);
    const keys = sqlite
      .query<SealedIdempotencyKey, []>(
        `SELECT owner, key, request_hash AS requestHash, state, response
         FROM payment_idempotency_keys`,
      )
      .all();
    const sealKey = sqlite.prepare(
      "UPDATE payment_idempotency_keys SET seal = ? WHERE owner = ? AND key = ?",
    );
    for (const row of keys) sealKey.run(seal.idempotencyKey(row), row.owner, row.key);
    sealed = { payments: rows.length, idempotencyKeys: keys.length };
  };
  return { companions: new Map([[PAYMENT_SEALS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/** What the start and the CLI say when the upgrade sealed payments. */
export function paymentsSealedMessage({
  payments,
  idempotencyKeys,
}: PaymentsSealedOnUpgrade): string {
  return `sealed the ${payments} payments (and ${idempotencyKeys} idempotency keys) stored before this release; payments rows written into the file from now on are treated as absent`;
}
