/**
 * @module
 * The payments table: what the routes read and write, and how a verified Stripe event moves a
 * payment. `applyStripeEvent` must run inside the caller's transaction (the webhook's, which also
 * records the event id), so the dedupe record and the effect commit together or not at all; it
 * returns what to audit and count once that transaction has committed.
 */
import { and, desc, eq, gte, inArray, isNull, lt, lte, sql } from "drizzle-orm";
import type { Core } from "../../core";
import type { AppDatabase } from "../../db/client";
import { preparedOnUse } from "../../db/prepared-on-use";
import { payments } from "../../db/schema";
import { storedText } from "../../logging/logger";
import type { AuditEvent } from "../../plugins/audit/events";
import { keyLineage } from "../../plugins/auth/lineage";
import { MAX_QUERY_INTEGER } from "../../plugins/strict-query";
import { isStripeId } from "./ids";
import {
  createPaymentSeal,
  type PaymentSeal,
  type PaymentTamperReport,
  paymentTamperReporter,
} from "./seal";
import { mayMove, type PaymentStatus } from "./status";
import { storedUndecided, type UndecidedRefund, undecidedOf } from "./undecided-refund";

/** The text of payments one page of `GET /api/payments` holds at most (its first payment always). */
export const LIST_PAGE_BYTES = 1024 * 1024;

/** What a payment's text takes, read from its row's header (octet_length), never the text. */
const PAYMENT_TEXT_BYTES = sql<number>`coalesce(octet_length(${payments.description}), 0)
  + coalesce(octet_length(${payments.metadata}), 0)
  + coalesce(octet_length(${payments.customerEmail}), 0)`;

export type PaymentRow = typeof payments.$inferSelect;

/** A payment as its owner sees it (the API's `Payment` schema, model.ts). */
export interface PaymentView {
  id: string;
  amount: number;
  currency: string;
  status: string;
  amountRefunded: number;
  description: string | null;
  customerEmail: string | null;
  metadata: Record<string, string> | null;
  disputed: boolean;
  createdAt: string;
  updatedAt: string;
}

export function viewOf(row: PaymentRow): PaymentView {
  return {
    id: row.id,
    amount: row.amount,
    currency: row.currency,
    status: row.status,
    amountRefunded: row.amountRefunded,
    description: row.description,
    customerEmail: row.customerEmail,
    metadata: row.metadata === null ? null : (JSON.parse(row.metadata) as Record<string, string>),
    disputed: row.disputedAt !== null,
    createdAt: new Date(row.createdAt).toISOString(),
    updatedAt: new Date(row.updatedAt).toISOString(),
  };
}

/**
 * The `updatedAt` a change of `row` at `now` stores: `now`, or just past the stored time when that
 * is not earlier, so that every change moves it forward and a client syncing on `updatedAt >
 * last seen` sees each one. A write that waited for a lock behind a newer one set it back (probe
 * 92b F1), and keeping the stored time stopped it where a client had already read it (92d F1). A
 * time a clock ahead wrote (another VM's) stays ahead until the clock passes it, each change a
 * millisecond past it (92d F2: kept, it froze; moved back, it would hide the changes).
 */
export function changedAt(row: Pick<PaymentRow, "updatedAt">, now: number): number {
  return Math.max(now, row.updatedAt + 1);
}

/** JSON with every object's keys sorted, at every level, and undefined members left out. */
export function canonicalJson(value: unknown): string {
  const canonical = (part: unknown): unknown => {
    if (part === null || typeof part !== "object" || Array.isArray(part)) return part;
    const entries = Object.entries(part as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries.map(([k, v]) => [k, canonical(v)]));
  };
  return JSON.stringify(canonical(value));
}

/**
 * Whether two stored metadata texts hold the same keys and values, in any order: a retry may send
 * its keys in another order under the same Idempotency-Key (whose hash reads them canonically).
 */
function sameMetadata(stored: string | null, asked: string | null): boolean {
  if (stored === null || asked === null) return stored === asked;
  try {
    return canonicalJson(JSON.parse(stored)) === canonicalJson(JSON.parse(asked));
  } catch {
    return false;
  }
}

/** The fields of a verified Stripe event the ledger reads (`Stripe.Event`, narrowed). */
export interface StripeEventLike {
  id: string;
  type: string;
  created: number;
  data: { object: Record<string, unknown> };
}

/** What one event did, for the caller to audit and count after its transaction commits. */
export interface EventEffect {
  outcome: "processed" | "ignored";
  /** Why it was ignored: an unknown type, a payment we do not hold, a stale or repeated move. */
  reason?: string;
  /** Statuses entered (payments_total). */
  statuses: PaymentStatus[];
  audit: Omit<AuditEvent, "ip" | "route" | "requestId">[];
  /** An alert-worthy event (a dispute, an event whose money is not the payment's), logged at error level. */
  alert?: string;
}

const PAYMENT_INTENT_EVENTS: Record<string, PaymentStatus> = {
  "payment_intent.processing": "processing",
  "payment_intent.succeeded": "succeeded",
  "payment_intent.payment_failed": "failed",
  "payment_intent.canceled": "canceled",
};

const AUDIT_OF: Partial<Record<PaymentStatus, AuditEvent["type"]>> = {
  succeeded: "payment.succeeded",
  failed: "payment.failed",
  canceled: "payment.canceled",
  refunded: "payment.refunded",
};

/** The audit row of a status Stripe's event moved a payment to. */
function statusAudit(
  type: AuditEvent["type"],
  outcome: "success" | "info",
  row: Pick<PaymentRow, "id" | "amount" | "currency">,
  eventId: string,
): EventEffect["audit"][number] {
  return {
    type,
    outcome,
    actor: "stripe",
    detail: { paymentId: row.id, eventId, amount: row.amount, currency: row.currency },
  };
}

const ignored = (reason: string): EventEffect => ({
  outcome: "ignored",
  reason,
  statuses: [],
  audit: [],
});

/**
 * Whether a signed event says of the money something other than the payment it names holds: an
 * amount or a currency it carries that differs. Palisade makes each intent and never changes its
 * amount, so Stripe never sends one; an event that does is not applied, and is logged as an alert
 * (probe 70b F1: a 1000 USD payment was marked succeeded by an event for 50 EUR). Only what the
 * event carries is compared: whoever could sign one without them could sign them matching.
 */
function moneyDiffers(object: Record<string, unknown>, row: PaymentRow): boolean {
  const { amount, currency } = object;
  if (amount !== undefined && amount !== row.amount) return true;
  return (
    currency !== undefined &&
    (typeof currency !== "string" || currency.toLowerCase() !== row.currency)
  );
}

const MONEY_DIFFERS = "the event's amount or currency is not the payment's";

/**
 * Whether a dispute's currency is not the payment's, or its amount is no amount at all. Its amount
 * may differ from the payment's either way: Stripe documents it as "usually the amount of the
 * charge, but it can differ (usually because of currency fluctuation …)" (probe 72d), and a
 * dispute may be for part of it.
 */
function disputeMoneyDiffers(object: Record<string, unknown>, row: PaymentRow): boolean {
  const { amount, currency } = object;
  if (
    amount !== undefined &&
    (typeof amount !== "number" || !Number.isInteger(amount) || amount <= 0)
  ) {
    return true;
  }
  return (
    currency !== undefined &&
    (typeof currency !== "string" || currency.toLowerCase() !== row.currency)
  );
}

/** An event not applied because its money is not the payment's: ignored, and an alert. */
const moneyMismatch = (): EventEffect => ({
  ...ignored(MONEY_DIFFERS),
  alert: `stripe event not applied: ${MONEY_DIFFERS}`,
});

/** One ledger per database, so the features that share it (payments, Stripe's webhook) share its reports. */
const ledgers = new WeakMap<AppDatabase, PaymentLedger>();

/**
 * The ledger of a core: sealed with its AUDIT_SECRET_KEY, tampering reported to its log and audit
 * once per row for every feature of the process that reads it.
 */
export function paymentLedgerOf(
  core: Pick<Core, "db" | "config" | "logger" | "audit" | "credentialSeal">,
) {
  let ledger = ledgers.get(core.db);
  if (ledger === undefined) {
    ledger = new PaymentLedger(
      core.db,
      createPaymentSeal(core.config.audit.secretKey),
      paymentTamperReporter(core),
      (keyId) => keyLineage(core.db.$client, core.credentialSeal, keyId),
    );
    ledgers.set(core.db, ledger);
  }
  return ledger;
}

export class PaymentLedger {
  private readonly statements;

  constructor(
    private readonly db: AppDatabase,
    readonly seal: PaymentSeal,
    /** Reports a payments row that fails its seal (once per row and process). */
    readonly reportTampered: PaymentTamperReport,
    /** A key's lineage as its row seals it (plugins/auth/lineage); null when it fails its seal. */
    private readonly lineageOf: (keyId: string) => string | null,
  ) {
    this.statements = preparedOnUse({
      byId: () =>
        db
          .select()
          .from(payments)
          .where(eq(payments.id, sql.placeholder("id")))
          .prepare(),
      byOwnerAndId: () =>
        db
          .select()
          .from(payments)
          .where(
            and(
              eq(payments.owner, sql.placeholder("owner")),
              eq(payments.id, sql.placeholder("id")),
            ),
          )
          .prepare(),
    });
  }

  /** Whether a stored row matches its seal; one that does not is reported. */
  intact(row: PaymentRow): boolean {
    if (this.seal.intact.payment(row)) return true;
    this.reportTampered("payments", row.id);
    return false;
  }

  /** The row, if Palisade wrote it: one that fails its seal is reported and treated as absent. */
  find(id: string): PaymentRow | undefined {
    const row = this.statements.byId.get({ id });
    return row && this.intact(row) ? row : undefined;
  }

  /**
   * Whether the ledger holds intent `id`, intact, for `owner` with the amount and currency Stripe
   * answered and the description, email and metadata asked for: what Stripe replays a key for
   * only when each is the same (one of the same owner and amount but other details was taken as
   * this one, probe 90o F2).
   */
  holdsAs(
    id: string,
    owner: string,
    made: { amount: number; currency: string },
    asked: Pick<PaymentRow, "description" | "customerEmail" | "metadata">,
  ): boolean {
    const row = this.find(id);
    return (
      row !== undefined &&
      row.owner === owner &&
      row.amount === made.amount &&
      row.currency === made.currency &&
      row.description === asked.description &&
      row.customerEmail === asked.customerEmail &&
      sameMetadata(row.metadata, asked.metadata)
    );
  }

  findOwned(owner: string, id: string): PaymentRow | undefined {
    const row = this.statements.byOwnerAndId.get({ owner, id });
    return row && this.intact(row) ? row : undefined;
  }

  /** The seal of `row` with `change` made: every write of a sealed column goes through here. */
  private resealed(row: PaymentRow, change: Partial<PaymentRow>): { seal: string } {
    return { seal: this.seal.payment({ ...row, ...change }) };
  }

  /**
   * The owner's payments, newest first, `limit` from before the cursor (a `seq`). A `seq` larger
   * than a query carries (2^53 − 1), or below 1, is none SQLite handed out here (it counts from 1):
   * written into the file (the column is not sealed), it would be a cursor no request can send
   * back, and every older payment out of reach (probes 29c F3, 29e F2, 29f F4). Such a row is left
   * out of the list; it is still read by its id.
   */
  list(owner: string, cursor: number | undefined, limit: number) {
    const owned = and(
      eq(payments.owner, owner),
      sql`typeof(${payments.seq}) = 'integer'`,
      gte(payments.seq, 1),
      lte(payments.seq, MAX_QUERY_INTEGER),
      cursor === undefined ? undefined : lt(payments.seq, cursor),
    );
    // A page holds `limit` payments or LIST_PAGE_BYTES of their text, whichever comes first (its
    // first payment always): each may hold ~33 KB of description, email and metadata, and a page
    // of 100 such was read, checked and sent as one piece (probe 87d F1: 6.4 MB, the event loop
    // held ~0.1 s a request). The sizes come from the rows' headers, never their text.
    const sizes = this.db
      .select({ seq: payments.seq, bytes: PAYMENT_TEXT_BYTES })
      .from(payments)
      .where(owned)
      .orderBy(desc(payments.seq))
      .limit(limit + 1)
      .all();
    const taken: number[] = [];
    let bytes = 0;
    for (const size of sizes) {
      if (taken.length === limit) break;
      if (taken.length > 0 && bytes + size.bytes > LIST_PAGE_BYTES) break;
      bytes += size.bytes;
      taken.push(size.seq);
    }
    const page =
      taken.length === 0
        ? []
        : this.db
            .select()
            .from(payments)
            .where(and(owned, inArray(payments.seq, taken)))
            .orderBy(desc(payments.seq))
            .all();
    return {
      // A row that fails its seal is left out (reported); the cursor still moves past it.
      payments: page.filter((row) => this.intact(row)).map(viewOf),
      nextCursor: sizes.length > taken.length ? (taken.at(-1) ?? null) : null,
    };
  }

  /** Inserts a new intent's row, sealed; a row with that id already there (a replayed claim) is kept. */
  /**
   * Stores a new intent; false when the ledger holds that intent already (Stripe replayed it for an
   * idempotency key whose stored result was lost): the row there is kept as it is.
   */
  insert(row: Omit<typeof payments.$inferInsert, "seal">): boolean {
    const seal = this.seal.payment({
      id: row.id,
      owner: row.owner,
      amount: row.amount,
      currency: row.currency,
      status: row.status,
      statusEventAt: row.statusEventAt ?? 0,
      amountRefunded: row.amountRefunded ?? 0,
      disputedAt: row.disputedAt ?? null,
      clientSecret: row.clientSecret ?? null,
      description: row.description ?? null,
      customerEmail: row.customerEmail ?? null,
      metadata: row.metadata ?? null,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
    });
    const inserted = this.db
      .insert(payments)
      .values({ ...row, seal })
      .onConflictDoNothing({ target: payments.id })
      .returning({ id: payments.id })
      .all();
    return inserted.length === 1;
  }

  /** Moves `row` to `next` if the status rule allows it; returns whether it moved. */
  private move(
    row: PaymentRow,
    next: PaymentStatus,
    eventAt: number,
    now: number,
    // A change that is part of one already written (a refund that makes the payment `refunded`)
    // keeps that change's time: it is one change to a client (probe 92e F3).
    updatedAt = changedAt(row, now),
  ): boolean {
    if (!mayMove(row.status as PaymentStatus, row.statusEventAt, next, eventAt)) return false;
    // Compare-and-set on the status read: another writer in between makes this a no-op.
    const statusEventAt = Math.max(eventAt, row.statusEventAt);
    const moved = this.db
      .update(payments)
      .set({
        status: next,
        statusEventAt,
        updatedAt,
        ...this.resealed(row, { status: next, statusEventAt, updatedAt }),
      })
      .where(and(eq(payments.id, row.id), eq(payments.status, row.status)))
      .returning({ id: payments.id })
      .all();
    return moved.length === 1;
  }

  /**
   * The first key of the rotation chain `keyId` ends, as the key's own row says and seals it
   * (`lineage`, written when the key was made: its own id, or its predecessor's lineage). Nothing
   * done to another row (a `replaced_by` pointed elsewhere, cut, or the old key deleted) moves it.
   * Null when the lineage is missing or fails its seal: written into the file (reported), and the
   * key then reaches no payments rather than another owner's, or a new owner's.
   */
  firstKeyOf(keyId: string): string | null {
    return this.lineageOf(keyId);
  }

  /**
   * Ends a refund's claim without counting it (a pending refund is counted when settled): the claim
   * it took (`claim`, its `refund_started_at`), never a later refund's.
   */
  releaseRefund(id: string, claim: number): null {
    this.db
      .update(payments)
      .set({ refundStartedAt: null })
      .where(and(eq(payments.id, id), eq(payments.refundStartedAt, claim)))
      .run();
    return null;
  }

  /**
   * The payment's refunds whose outcome Stripe has not told (undecided-refund.ts), as `stored`
   * holds them: none for none, null for a value Palisade did not store (written into the file).
   */
  undecidedOf(id: string, stored: string | null): UndecidedRefund[] | null {
    if (stored === null) return [];
    return undecidedOf(stored, id, this.seal.undecidedRefunds);
  }

  /**
   * Stores `entries` as the payment's undecided refunds, the row resealed over them (seal.ts), if
   * the row is still `row` as the caller read it (its list and its seal); whether it was.
   */
  writeUndecided(row: PaymentRow, entries: readonly UndecidedRefund[]): boolean {
    const refundUndecided = storedUndecided(row.id, entries, this.seal.undecidedRefunds);
    const changed = this.db
      .update(payments)
      .set({ refundUndecided, ...this.resealed(row, { refundUndecided }) })
      .where(
        and(
          eq(payments.id, row.id),
          row.refundUndecided === null
            ? isNull(payments.refundUndecided)
            : eq(payments.refundUndecided, row.refundUndecided),
          row.seal === null ? isNull(payments.seal) : eq(payments.seal, row.seal),
        ),
      )
      .returning({ id: payments.id })
      .all();
    return changed.length === 1;
  }

  /**
   * The row as recordRefund at `now` would leave it (what a refund answers, its write done or
   * waiting): its `updatedAt` too, which the answer showed from before the refund (probe 90o), and
   * which never goes back.
   */
  afterRefund(row: PaymentRow, refundedTotal: number, now: number): PaymentRow {
    const total = Math.min(row.amount, Math.max(row.amountRefunded, refundedTotal));
    return {
      ...row,
      amountRefunded: total,
      status: total === row.amount ? "refunded" : row.status,
      updatedAt: changedAt(row, now),
    };
  }

  /**
   * Records a refund Stripe made (status `succeeded`): the refunded total only grows. The admin's
   * refund ends its own claim (`claim`, the `refund_started_at` it set; a later refund's claim is
   * left alone); Stripe's `charge.refunded` ends none (null), since a refund it did not start may
   * still be with Stripe, and a second one must not start beside it.
   */
  recordRefund(
    id: string,
    refundedTotal: number,
    now: number,
    claim: number | null,
  ): { kind: "recorded"; entered: PaymentStatus | null } | { kind: "absent" } {
    const row = this.find(id);
    if (!row) return { kind: "absent" };
    const at = changedAt(row, now);
    const total = this.afterRefund(row, refundedTotal, now).amountRefunded;
    this.db
      .update(payments)
      .set({
        amountRefunded: total,
        updatedAt: at,
        ...(claim !== null && row.refundStartedAt === claim ? { refundStartedAt: null } : {}),
        ...this.resealed(row, { amountRefunded: total, updatedAt: at }),
      })
      .where(eq(payments.id, id))
      .run();
    const refunded = { ...row, amountRefunded: total, updatedAt: at };
    const moved =
      total === row.amount && this.move(refunded, "refunded", row.statusEventAt, at, at);
    return { kind: "recorded", entered: moved ? "refunded" : null };
  }

  /**
   * Applies a verified event. Runs inside the caller's transaction. Ids inside the event are
   * checked against Stripe's patterns before they are looked up.
   */
  applyStripeEvent(event: StripeEventLike, now: number): EventEffect {
    const object = event.data.object;
    const next = PAYMENT_INTENT_EVENTS[event.type];
    if (next !== undefined) {
      if (!isStripeId("pi", object.id)) return ignored("malformed payment intent id");
      const row = this.find(object.id);
      if (!row) return ignored("unknown payment");
      if (moneyDiffers(object, row)) return moneyMismatch();
      if (!this.move(row, next, event.created, now)) return ignored("stale or repeated status");
      const type = AUDIT_OF[next];
      return {
        outcome: "processed",
        statuses: [next],
        audit:
          type === undefined
            ? []
            : [statusAudit(type, next === "succeeded" ? "success" : "info", row, event.id)],
      };
    }
    if (event.type === "charge.refunded") {
      const intentId = object.payment_intent;
      if (!isStripeId("ch", object.id) || !isStripeId("pi", intentId)) {
        return ignored("malformed charge or payment intent id");
      }
      const refunded = object.amount_refunded;
      if (typeof refunded !== "number" || !Number.isInteger(refunded) || refunded < 0) {
        return ignored("malformed amount_refunded");
      }
      const row = this.find(intentId);
      if (!row) return ignored("unknown payment");
      // The charge's amount is the intent's (one charge, captured whole); refunded, never more.
      if (moneyDiffers(object, row) || refunded > row.amount) return moneyMismatch();
      if (refunded <= row.amountRefunded) return ignored("stale or repeated refund");
      const recorded = this.recordRefund(row.id, refunded, now, null);
      const entered = recorded.kind === "recorded" ? recorded.entered : null;
      // A charge refunded was a charge paid: a payment refunded whole before its success was heard
      // of (Stripe delivers out of order) records that success here, as its own event would have,
      // since the late `payment_intent.succeeded` then finds it refunded and is ignored. Without
      // this the same history left a `payment.succeeded` row and a count, or neither, by the order
      // of delivery (probe 83a F1).
      const paidUnheard = entered === "refunded" && row.status !== "succeeded";
      return {
        outcome: "processed",
        statuses: paidUnheard ? ["succeeded", "refunded"] : entered ? [entered] : [],
        audit: [
          ...(paidUnheard ? [statusAudit("payment.succeeded", "success", row, event.id)] : []),
          {
            type: "payment.refunded",
            outcome: "info",
            actor: "stripe",
            detail: {
              paymentId: row.id,
              chargeId: object.id,
              eventId: event.id,
              amountRefunded: Math.min(row.amount, refunded),
              currency: row.currency,
            },
          },
        ],
      };
    }
    if (event.type === "charge.dispute.created") {
      const intentId = object.payment_intent;
      if (!isStripeId("dp", object.id) || !isStripeId("ch", object.charge)) {
        return ignored("malformed dispute or charge id");
      }
      const found = isStripeId("pi", intentId) ? this.find(intentId) : undefined;
      // A dispute's money must be in the payment's currency, an amount. One that is not is still
      // audited and alerted (it is money Stripe says leaves the account) but marks no payment.
      const fits = found !== undefined && !disputeMoneyDiffers(object, found);
      const row = fits ? found : undefined;
      if (row && row.disputedAt === null) {
        const updatedAt = changedAt(row, now);
        this.db
          .update(payments)
          .set({
            disputedAt: now,
            updatedAt,
            ...this.resealed(row, { disputedAt: now, updatedAt }),
          })
          .where(eq(payments.id, row.id))
          .run();
      }
      // Audited whether or not the payment is ours: a dispute is money leaving the account.
      return {
        outcome: "processed",
        statuses: [],
        audit: [
          {
            type: "payment.dispute.created",
            outcome: "failure",
            actor: "stripe",
            detail: {
              disputeId: object.id,
              chargeId: object.charge,
              paymentId: row?.id ?? null,
              eventId: event.id,
              amount: typeof object.amount === "number" ? object.amount : null,
              // Cut between characters: half an emoji would be an unpaired surrogate in the
              // audit detail (probe 38a F8).
              reason: typeof object.reason === "string" ? storedText(object.reason, 64) : null,
            },
          },
        ],
        alert: found && !fits ? `payment disputed: ${MONEY_DIFFERS}` : "payment disputed",
      };
    }
    return ignored("unhandled event type");
  }
}
