/**
 * @module
 * What the payments feature holds about a user. Export: every payment (without client secrets).
 * Erasure keeps the rows, which accounting needs, but strips what identifies the person — the
 * customer email, the description and the metadata (free text a client may have put a name in),
 * and the client secret — and gives them to the erased user's pseudonym; the user's idempotency
 * keys (which hold first responses) are deleted.
 */
import { and, asc, eq, getTableColumns, sql } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { paymentIdempotencyKeys, payments } from "../../db/schema";
import type { PrivacyContributor } from "../privacy/contributor";
import { type PaymentLedger, viewOf } from "./ledger";

/** Payments an erasure's part ahead of it reads. */
const PAYMENTS_AHEAD_PART = 1_000;

export function paymentsContributor(db: AppDatabase, ledger: PaymentLedger): PrivacyContributor {
  const ownedBy = (userId: string) =>
    db
      .select()
      .from(payments)
      .where(eq(payments.owner, `user:${userId}`))
      .orderBy(asc(payments.seq))
      .all();
  return {
    name: "payments",
    // A row that fails its seal is not the user's payment (it is reported).
    export: (userId) =>
      ownedBy(userId)
        .filter((row) => ledger.intact(row))
        .map(viewOf),
    // Ahead of the erasure, a part at a time: the payments whose row fails its seal but whose seal
    // names the user (its owner changed in the database file, probe 72a F1) are given back to the
    // user, so the erasure strips them with the rest. Before, such a row kept its customer email,
    // description and client secret and the erasure answered 204. The owner is put back to what the
    // seal says, never resealed here; one HMAC a payment, outside the erasure's transaction.
    eraseAhead(userId) {
      const owner = `user:${userId}`;
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
              and(
                sql`${payments}.rowid = CAST(${at} AS INTEGER)`,
                eq(payments.seal, row.seal ?? ""),
              ),
            )
            .run();
        }
        after = rows.length < PAYMENTS_AHEAD_PART ? null : rows[rows.length - 1]!.at;
        return after === null;
      };
    },
    erase(userId, { pseudonym }) {
      const owner = `user:${userId}`;
      const stripped = {
        customerEmail: null,
        description: null,
        metadata: null,
        clientSecret: null,
      };
      // Each row resealed for its new owner; one that failed its seal is stripped all the same,
      // never resealed (a change by Palisade must not make a row written into the file trusted).
      for (const row of ownedBy(userId)) {
        const next = { ...row, ...stripped, owner: pseudonym };
        db.update(payments)
          .set({
            ...stripped,
            owner: next.owner,
            ...(ledger.intact(row) ? { seal: ledger.seal.payment(next) } : {}),
          })
          // By the payment's id (unique), not its `seq`: one the file put past 2^53 is read
          // rounded, and its update missed the row or stripped another owner's payment.
          .where(eq(payments.id, row.id))
          .run();
      }
      db.delete(paymentIdempotencyKeys).where(eq(paymentIdempotencyKeys.owner, owner)).run();
    },
  };
}
