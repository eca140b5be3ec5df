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
 * (probe 92a F2, 92c F1). A key another row already holds changes neither row: the start never
 * moves an address from the account that holds it, nor decides between two accounts on what the
 * file says (92a F3, 92c F1: a forged or tampered holder set a genuine account aside, or lost its
 * key for good; 92f F1, 92g F1: deciding by which is the older, an account registered while the
 * file hid the other's key kept it, and a row copied back from a backup took it). The row keeps
 * its old key, which signs in to nothing (every lookup folds), and its id is returned: held by an
 * intact account (`collides`), for an operator to resolve, or by a row that fails its seal
 * (`heldByTampered`), which the next start after the file is put right folds. Seals are checked
 * without reporting: such rows are read at every start, and each report is an audit row (92c F5);
 * they are reported when they are used. In parts of `REFOLD_PART` rows, each an immediate
 * transaction, so processes starting together share the work.
 */
export function refoldEmailKeys(
  db: AppDatabase,
  seal: CredentialSeal,
): { collides: string[]; heldByTampered: string[] } {
  const collides: string[] = [];
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
          if (holder !== undefined) {
            (matches(holder) ? collides : heldByTampered).push(row.id);
            continue;
          }
          const emailKey = folded;
          db.update(users)
            .set({ emailKey, seal: seal.account({ ...row, emailKey }) })
            .where(eq(users.id, row.id))
            .run();
        }
        return rows.at(-1)?.id;
      },
      { behavior: "immediate" },
    );
    if (typeof part !== "string") return { collides, heldByTampered };
    after = part;
  }
}

/**
 * The rows whose key an earlier release folded once and which fold to `key` (a start leaves such
 * a row as it is while another row holds `key`): they hold the address too, and registering it
 * meanwhile would take it from them for good (probe 92e F1). Read through the partial index; a
 * longer key (written into the file) is not read, as folding makes none shorter.
 */
export function unfoldedKeysFoldingTo(
  db: AppDatabase,
  key: string,
): { id: string; email: unknown }[] {
  if (!key.includes("ss")) return [];
  return db
    .select({ id: users.id, email: users.email, emailKey: users.emailKey })
    .from(users)
    .where(
      and(sql`instr(${users.emailKey}, 'ß') > 0`, sql`length(${users.emailKey}) <= ${key.length}`),
    )
    .all()
    .filter((row) => typeof row.emailKey === "string" && foldCase(row.emailKey) === key)
    .map(({ id, email }) => ({ id, email }));
}
