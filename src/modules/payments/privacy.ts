/**
 * @module
 * What the payments feature holds about a user. Export: every payment (without client secrets).
 * Erasure keeps the rows, which accounting needs, but strips what identifies the person — the
 * customer email, the description and the metadata (free text a client may have put a name in),
 * and the client secret — and gives them to the erased user's pseudonym. The user's idempotency
 * keys (which hold first responses) are exported, without those responses, and deleted
 * (idempotencyKeysContributor).
 */
import { and, asc, eq, getTableColumns, sql } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { paymentIdempotencyKeys, payments } from "../../db/schema";
import { readableTime } from "../../db/stored-values";
import { type PrivacyContributor, StreamedJson } from "../privacy/contributor";
import { type PaymentLedger, type PaymentRow, viewOf } from "./ledger";

/** Payments an erasure's part ahead of it reads. */
const PAYMENTS_AHEAD_PART = 1_000;

/**
 * Payments an erasure's part ahead of it strips, in one transaction: each is a seal checked, a
 * seal made and a row written (~0.1 ms here), so a part holds the write lock ~10 ms.
 */
export const PAYMENTS_STRIPPED_PART = 100;

/**
 * Payments an export reads and checks at a time, a point to let other requests in after each. The
 * page stays in memory while the client reads it: 500 payments of the largest description and
 * metadata were ~17 MB an export held (probe 83b F3); 100 are ~3.5 MB.
 */
export const PAYMENTS_EXPORT_PAGE = 20;

/** What an erasure strips from a payment: what identifies the person, and the client secret. */
const STRIPPED = {
  customerEmail: null,
  description: null,
  metadata: null,
  clientSecret: null,
};

export function paymentsContributor(db: AppDatabase, ledger: PaymentLedger): PrivacyContributor {
  /**
   * Up to `limit` of the owner's payments in `seq` order after the cursor `after`, and the cursor
   * past them (the last one's `seq` as text: one the file put past 2^53 reads rounded as a number,
   * and a page after it would skip or repeat rows), null when this page is the last.
   */
  const ownedPage = (owner: string, after: string | null, limit: number) => {
    const found = db
      .select({ at: sql<string>`CAST(${payments.seq} AS TEXT)`, ...getTableColumns(payments) })
      .from(payments)
      .where(
        and(
          eq(payments.owner, owner),
          after === null ? undefined : sql`${payments.seq} > CAST(${after} AS INTEGER)`,
        ),
      )
      .orderBy(asc(payments.seq))
      .limit(limit)
      .all();
    return {
      rows: found.map(({ at: _at, ...row }): PaymentRow => row),
      next: found.length < limit ? null : found[found.length - 1]!.at,
    };
  };

  /**
   * A part of the owner's payments after `after` stripped and given to `pseudonym`, each resealed
   * only where its seal held; the cursor past the part, null once none is left.
   */
  const stripPart = (owner: string, after: string | null, pseudonym: string) => {
    const part = ownedPage(owner, after, PAYMENTS_STRIPPED_PART);
    for (const row of part.rows) {
      const next = { ...row, ...STRIPPED, owner: pseudonym };
      db.update(payments)
        .set({
          ...STRIPPED,
          owner: next.owner,
          ...(ledger.intact(row) ? { seal: ledger.seal.payment(next) } : {}),
        })
        // By the payment's id (unique), not its `seq`: one the file put past 2^53 is read
        // rounded, and its update missed the row or stripped another owner's payment.
        .where(eq(payments.id, row.id))
        .run();
    }
    return part.next;
  };

  return {
    name: "payments",
    // A page at a time as the answer is sent, not every payment read and checked before its first
    // byte (probe 81b F1: 20,000 payments held every other request ~0.3 s); a row that fails its
    // seal is not the user's payment (it is reported).
    export: (userId) =>
      new StreamedJson(function* () {
        const owner = `user:${userId}`;
        yield "[";
        let comma = "";
        let after: string | null = null;
        for (;;) {
          const page = ownedPage(owner, after, PAYMENTS_EXPORT_PAGE);
          // A payment a piece, 20 a read: a page of 100 payments of ~33 KB each was one piece
          // of 3-6 MB, written in one go (probe 87d F1: the event loop held ~0.19 s).
          for (const row of page.rows) {
            if (!ledger.intact(row)) continue;
            yield comma + JSON.stringify(viewOf(row));
            comma = ",";
          }
          if (page.next === null) break;
          after = page.next;
          yield "";
        }
        yield "]";
      }),
    // Ahead of the erasure, a part at a time: the payments whose row fails its seal but whose seal
    // names the user (its owner changed in the database file, probe 72a F1) are given back to the
    // user, so the erasure strips them with the rest. Before, such a row kept its customer email,
    // description and client secret and the erasure answered 204. The owner is put back to what the
    // seal says, never resealed here; one HMAC a payment, outside the erasure's transaction.
    //
    // Then the user's payments are stripped and given to the pseudonym, a part at a time, each in
    // a transaction of its own: all of them in the erasure's transaction held every other request,
    // and every other process's writes, ~1.8 s for 20,000 (probe 81b F1). An erasure stopped
    // between two parts leaves those done stripped, as the erasure would have, and the rest to the
    // next erasure of the account.
    eraseAhead(userId, { pseudonym }) {
      const owner = `user:${userId}`;
      const giveBack = givenBackToOwner(owner);
      let givenBack = false;
      let after: string | null = null;
      return () => {
        if (!givenBack) {
          givenBack = giveBack();
          return false;
        }
        const next = db.$client.transaction(() => stripPart(owner, after, pseudonym)).immediate();
        // Moved on only once the part commits: a part refused by a lock is asked again whole.
        if (next === null) return true;
        after = next;
        return false;
      };
    },
    erase(userId, { pseudonym }) {
      const owner = `user:${userId}`;
      // What came since the parts ahead of it (or all of it, when they stopped).
      let after: string | null = null;
      do after = stripPart(owner, after, pseudonym);
      while (after !== null);
    },
  };

  /**
   * The payments whose row fails its seal but whose seal names `owner` (its owner changed in the
   * database file, probe 72a F1) given back to it, a part at a time: true once every payment has
   * been looked at.
   */
  function givenBackToOwner(owner: string): () => boolean {
    let after: string | null = null;
    return () => {
      const rows = db
        .select({
          at: sql<string>`CAST(${payments}.rowid AS TEXT)`,
          ...getTableColumns(payments),
        })
        .from(payments)
        .where(after === null ? undefined : sql`${payments}.rowid > CAST(${after} AS INTEGER)`)
        .orderBy(sql`${payments}.rowid`)
        .limit(PAYMENTS_AHEAD_PART)
        .all();
      for (const { at, ...row } of rows) {
        if (row.owner === owner || ledger.seal.intact.payment(row)) continue;
        if (!ledger.seal.intact.payment({ ...row, owner })) continue;
        // Only the row read, as read: a rowid another row took since is not given away.
        db.update(payments)
          .set({ owner })
          .where(
            and(sql`${payments}.rowid = CAST(${at} AS INTEGER)`, eq(payments.seal, row.seal ?? "")),
          )
          .run();
      }
      after = rows.length < PAYMENTS_AHEAD_PART ? null : rows[rows.length - 1]!.at;
      return after === null;
    };
  }
}

/**
 * The Idempotency-Keys the user's intents were asked under, kept a day: text the client chose,
 * which may name a person (`order-for-Jane-Doe-42`), and the erasure deletes them, yet the export
 * left them out (probe 85c F1). Each with its state, when it was claimed and the intent it made;
 * never the first response stored with it, which holds the client secret. At most the day's
 * intents and claims (PAYMENT_DAILY_INTENTS, 10,000 at most): one read. A row that fails its seal
 * is not the user's (the daily cap reports it).
 */
export function idempotencyKeysContributor(
  db: AppDatabase,
  ledger: PaymentLedger,
): PrivacyContributor {
  return {
    name: "paymentIdempotencyKeys",
    export: (userId) =>
      db
        .select()
        .from(paymentIdempotencyKeys)
        .where(eq(paymentIdempotencyKeys.owner, `user:${userId}`))
        .orderBy(asc(paymentIdempotencyKeys.claimedAt), asc(paymentIdempotencyKeys.key))
        .all()
        .filter((row) => ledger.seal.intact.idempotencyKey(row))
        .map((row) => ({
          key: row.key,
          state: row.state,
          // Not sealed: a time the file holds as none is shown as none.
          claimedAt: readableTime(row.claimedAt) ? new Date(row.claimedAt).toISOString() : null,
          paymentId: row.state === "done" ? paymentIdOf(row.response) : null,
        })),
    erase(userId) {
      db.delete(paymentIdempotencyKeys)
        .where(eq(paymentIdempotencyKeys.owner, `user:${userId}`))
        .run();
    },
  };
}

/** The intent a stored first response names (sealed with the key, so as Palisade wrote it). */
function paymentIdOf(response: string | null): string | null {
  if (response === null) return null;
  try {
    const id = (JSON.parse(response) as { id?: unknown }).id;
    return typeof id === "string" ? id : null;
  } catch {
    return null;
  }
}
