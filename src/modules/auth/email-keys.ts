/**
 * @module
 * Stored address keys brought to today's folding (email.ts `foldCase`). An earlier release folded
 * a key once, which left the capital `ẞ` as `ß` where every other spelling of the address folds to
 * `ss`: an account registered as `STRAẞE@…` could not be found by `strasse@…` and the other way
 * round (probe 91i F4). Such keys are the ones holding `ß` (no folded key holds it now), found
 * through a partial index so that a start does not read every account.
 */
import { and, asc, eq, gt, sql } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { sealMatches } from "../../db/row-seal";
import { users } from "../../db/schema";
import type { CredentialSeal } from "../../plugins/auth/seal";
import { sealedAccountColumns } from "../../plugins/auth/sealed-columns";
import { foldCase } from "./email";

/**
 * Rows folded in one write transaction: another process starting on the file waits for one part,
 * never for all (probe 92a F4: 100,000 rows held the lock 6.4 s, and processes starting beside it
 * exited on the lock).
 */
const REFOLD_PART = 500;

/**
 * Folds again every stored key a second fold changes, on rows that match their seal (resealed with
 * the new key). Nothing a row that does not match its seal holds is changed: it is refused anyway,
 * and put back as it was sealed it matches again, which a changed key would have undone for good
 * (probe 92a F2, 92c F1). A key another account already holds, intact, is not taken: this row is
 * set aside (its key null, as `reconcileEmailKeys` sets aside a collision) and its id returned.
 * Held by a row that fails its seal, neither changes (92a F3: the forged row set the genuine
 * account aside; 92c F1: taking the key from it undid a tamper's way back): the genuine row keeps
 * its old key, and the next start tries again. Seals are checked without reporting: such rows
 * are read at every start, and each report is an audit row (92c F5); they are reported when they
 * are used. In parts of `REFOLD_PART` rows, each an immediate transaction, so processes starting
 * together share the work.
 */
export function refoldEmailKeys(
  db: AppDatabase,
  seal: CredentialSeal,
): { setAside: string[]; heldByTampered: string[] } {
  const setAside: string[] = [];
  // Said at start (probe 92e F1: such an account could not sign in, and nothing said so).
  const heldByTampered: string[] = [];
  let after = "";
  for (;;) {
    const part = db.transaction(
      () => {
        const rows = db
          .select(sealedAccountColumns)
          .from(users)
          .where(and(sql`instr(${users.emailKey}, 'ß') > 0`, gt(users.id, after)))
          .orderBy(asc(users.id))
          .limit(REFOLD_PART)
          .all();
        const matches = (row: (typeof rows)[number]) =>
          typeof row.id === "string" &&
          sealMatches(seal.account(row), row.seal) &&
          !seal.erased(`user:${row.id}`);
        for (const row of rows) {
          if (typeof row.emailKey !== "string" || !matches(row)) continue;
          // The domain is ASCII (IDNA), which folding leaves as it is.
          const folded = foldCase(row.emailKey);
          if (folded === row.emailKey) continue;
          const holder = db
            .select(sealedAccountColumns)
            .from(users)
            .where(eq(users.emailKey, folded))
            .get();
          if (holder !== undefined && !matches(holder)) {
            heldByTampered.push(row.id);
            continue;
          }
          // Of two accounts, the older keeps the address, by their sealed ids (time-ordered
          // UUIDv7s Palisade made; `created_at` is not sealed): an account registered while this
          // one's key was hidden in the file (its `ß` written away) is the newer, and does not keep
          // the address once the file is put right (probe 92f F1).
          if (holder !== undefined && typeof holder.id === "string" && holder.id > row.id) {
            db.update(users)
              .set({ emailKey: null, seal: seal.account({ ...holder, emailKey: null }) })
              .where(eq(users.id, holder.id))
              .run();
            setAside.push(holder.id);
          }
          const emailKey =
            holder === undefined || (typeof holder.id === "string" && holder.id > row.id)
              ? folded
              : null;
          if (emailKey === null) setAside.push(row.id);
          db.update(users)
            .set({ emailKey, seal: seal.account({ ...row, emailKey }) })
            .where(eq(users.id, row.id))
            .run();
        }
        return rows.at(-1)?.id;
      },
      { behavior: "immediate" },
    );
    if (typeof part !== "string") return { setAside, heldByTampered };
    after = part;
  }
}

/**
 * Whether a stored key an earlier release folded once folds to `key`: such a row holds the address
 * until a start folds it (it does not while the row fails its seal), and registering the address
 * meanwhile would take it from the row for good (probe 92e F1). Read through the partial index.
 */
export function unfoldedKeyHolds(db: AppDatabase, key: string): boolean {
  if (!key.includes("ss")) return false;
  return (
    db
      .select({ emailKey: users.emailKey })
      .from(users)
      // Folding makes a key no shorter (`ß` is `ss`): a longer one written into the file is not read.
      .where(
        and(
          sql`instr(${users.emailKey}, 'ß') > 0`,
          sql`length(${users.emailKey}) <= ${key.length}`,
        ),
      )
      .all()
      .some((row) => typeof row.emailKey === "string" && foldCase(row.emailKey) === key)
  );
}
