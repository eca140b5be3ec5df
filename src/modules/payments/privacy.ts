/**
 * @module
 * What the payments feature holds about a user. Export: every payment (without client secrets).
 * Erasure keeps the rows, which accounting needs, but strips what identifies the person — the
 * customer email, the description and the metadata (free text a client may have put a name in),
 * and the client secret — and gives them to the erased user's pseudonym; the user's idempotency
 * keys (which hold first responses) are deleted.
 */
import { asc, eq } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { paymentIdempotencyKeys, payments } from "../../db/schema";
import type { PrivacyContributor } from "../privacy/contributor";
import { type PaymentLedger, viewOf } from "./ledger";

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
