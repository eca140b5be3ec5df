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
import { viewOf } from "./ledger";

export function paymentsContributor(db: AppDatabase): PrivacyContributor {
  return {
    name: "payments",
    export: (userId) =>
      db
        .select()
        .from(payments)
        .where(eq(payments.owner, `user:${userId}`))
        .orderBy(asc(payments.seq))
        .all()
        .map(viewOf),
    erase(userId, { pseudonym }) {
      const owner = `user:${userId}`;
      db.update(payments)
        .set({
          owner: pseudonym,
          customerEmail: null,
          description: null,
          metadata: null,
          clientSecret: null,
        })
        .where(eq(payments.owner, owner))
        .run();
      db.delete(paymentIdempotencyKeys).where(eq(paymentIdempotencyKeys.owner, owner)).run();
    },
  };
}
