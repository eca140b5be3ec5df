/**
 * @module
 * Stored address keys brought to today's folding (email.ts `foldCase`). An earlier release folded
 * a key once, which left the capital `ẞ` as `ß` where every other spelling of the address folds to
 * `ss`: an account registered as `STRAẞE@…` could not be found by `strasse@…` and the other way
 * round (probe 91i F4). Such keys are the ones holding `ß` (no folded key holds it now), found
 * through a partial index so that a start does not read every account.
 */
import { eq, sql } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { users } from "../../db/schema";
import type { CredentialSeal } from "../../plugins/auth/seal";
import { sealedAccountColumns } from "../../plugins/auth/sealed-columns";
import { foldCase } from "./email";

/**
 * Folds again every stored key a second fold changes, resealing the rows that were sealed as they
 * stood (a row written into the file stays refused). A key another account already holds is not
 * taken: that row is set aside (its key null, as `reconcileEmailKeys` sets aside a collision) and
 * its id returned. One immediate transaction, so processes starting together do it once.
 */
export function refoldEmailKeys(db: AppDatabase, seal: CredentialSeal): string[] {
  return db.transaction(
    () => {
      const setAside: string[] = [];
      const rows = db
        .select(sealedAccountColumns)
        .from(users)
        .where(sql`instr(${users.emailKey}, 'ß') > 0`)
        .all();
      for (const row of rows) {
        if (typeof row.emailKey !== "string") continue;
        // The domain is ASCII (IDNA), which folding leaves as it is.
        const folded = foldCase(row.emailKey);
        if (folded === row.emailKey) continue;
        const holder = db
          .select({ id: users.id })
          .from(users)
          .where(eq(users.emailKey, folded))
          .get();
        const emailKey = holder === undefined ? folded : null;
        if (emailKey === null) setAside.push(row.id);
        db.update(users)
          .set(
            seal.intact.account(row)
              ? { emailKey, seal: seal.account({ ...row, emailKey }) }
              : { emailKey },
          )
          .where(eq(users.id, row.id))
          .run();
      }
      return setAside;
    },
    { behavior: "immediate" },
  );
}
