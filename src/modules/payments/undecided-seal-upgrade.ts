/**
 * @module
 * The upgrade that puts the payments' undecided refunds under their payment's seal. The release
 * before this one sealed a payment's list (`refund_undecided`) alone, and its payment without it;
 * this one's payment seal covers the list (seal.ts). Lists that release wrote were accepted under
 * the payment's seal without them for as long as the row held them, and so was one of them written
 * back into the file after a refund had settled it: a new refund was answered with an old one
 * (probe 61c F2). Now the companion of migration 0028 reseals, once, in the migration's
 * transaction, each payment whose list both seals say that release wrote; from then on a list is
 * accepted only under its payment's seal.
 */
import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import { sealMatches } from "../../db/row-seal";
import { type PaymentSeal, SEALED_PAYMENT_COLUMNS, type SealedPayment } from "./seal";
import { storedListOf, undecidedOf } from "./undecided-refund";

export const UNDECIDED_SEALS_MIGRATION = "0028_refund_undecided_seals";

/** What 0028 sealed: the payments whose undecided refunds are now under their seal. */
export interface UndecidedSealed {
  payments: number;
}

export function undecidedSealing(seal: PaymentSeal): {
  companions: MigrationCompanions;
  sealed(): UndecidedSealed | null;
} {
  let sealed: UndecidedSealed | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const rows = sqlite
      .query<SealedPayment & { seal: string | null }, []>(
        `SELECT ${SEALED_PAYMENT_COLUMNS}, seal FROM payments WHERE refund_undecided IS NOT NULL`,
      )
      .all();
    const reseal = sqlite.prepare("UPDATE payments SET seal = ? WHERE id = ?");
    let payments = 0;
    for (const row of rows) {
      const list = row.refundUndecided as string;
      // Unlike the sealings of rows that had no seal, this one takes only what Palisade wrote: the
      // payment sealed without the list, the list under its own seal. Any other row stays as it
      // is, and fails its seal as it did before.
      if (
        writtenBeforeTheirTimes(list) &&
        sealMatches(seal.payment({ ...row, refundUndecided: null }), row.seal) &&
        undecidedOf(list, row.id, seal.undecidedRefunds) !== null
      ) {
        reseal.run(seal.payment(row), row.id);
        payments++;
      }
    }
    sealed = { payments };
  };
  return { companions: new Map([[UNDECIDED_SEALS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/**
 * Whether `stored` is a list as the release before this one wrote it: in the spelling it wrote, and
 * none of its entries carrying the time it was written (every list written since does). A list this
 * release wrote is never resealed by a second run of the companion (on a file put back before it,
 * which is also said as tampering): a settled one written back was the answer to a new refund
 * (probe 62a F1).
 */
function writtenBeforeTheirTimes(stored: string): boolean {
  const parsed = storedListOf(stored);
  if (parsed === null) return false;
  const { entries, seal } = parsed;
  return (
    Array.isArray(entries) &&
    stored === JSON.stringify({ entries, seal }) &&
    entries.every((entry) => entry !== null && typeof entry === "object" && !("at" in entry))
  );
}

/** What the start and the CLI say when the upgrade sealed undecided refunds. */
export function undecidedSealedMessage({ payments }: UndecidedSealed): string {
  return `sealed the undecided refunds of the ${payments} payments holding them before this release under their payment's seal; a list written into the file from now on makes its payment fail its seal`;
}
