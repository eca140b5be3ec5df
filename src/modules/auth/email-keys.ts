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
import { spellOut } from "../../logging/spell-out";
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
 * file hid the other's key kept it, and a row copied back from a backup took it; 93a F2: of two
 * rows folded once to one address, the older by id took it). Nor does a key move while any
 * account row fails its seal: that row may be the holder, its key moved away in the file (93a F1).
 * The row keeps its old key, which signs in to nothing (every lookup folds), and its id is
 * returned: held by an intact account or wanted by another row folded once (`collides`), for an
 * operator to resolve, or waiting on a row that fails its seal (`heldByTampered`), which the next
 * start after the file is put right folds. A holder deleted from the file is not seen (seals do
 * not cover a deletion; the account is gone with it). Seals are checked
 * without reporting: such rows are read at every start, and each report is an audit row (92c F5);
 * they are reported when they are used. In parts of `REFOLD_PART` rows, each an immediate
 * transaction, so processes starting together share the work.
 */
export function refoldEmailKeys(
  db: AppDatabase,
  seal: CredentialSeal,
): { collides: string[]; heldByTampered: string[]; blockedBy: string[] } {
  const collides: string[] = [];
  // Said at start (probe 92e F1: such an account could not sign in, and nothing said so).
  const heldByTampered: string[] = [];
  // The rows that keep them waiting, named with them (probe 93c F2: only db:verify found them).
  const blockedBy = new Set<string>();
  // What the file holds before any part: read in no write transaction (probe 93c F1: the scan
  // of every account inside one held the write lock 3 s at every start and command with 200,000
  // accounts, and the running service's writes failed; 93e F2: the count of rows folded once,
  // 330 ms with 100,000 of them). A part then moves a key only where that look says so, and a
  // holder gone since the look (its key moved or the row deleted in the file while the refold
  // ran) keeps its address (93e F1: the look alone was raced, and the address moved).
  const look = lookBeforeFolding(db, seal);
  if (look === null) return { collides, heldByTampered, blockedBy: [] };
  let after = "";
  for (;;) {
    const part = db.transaction(
      (): string | undefined => {
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
            if (matches(holder)) collides.push(row.id);
            else {
              heldByTampered.push(row.id);
              blockedBy.add(spellOut(holder.id, NAMED_ID_LENGTH));
            }
            continue;
          }
          // Held when the refold looked, and by no row now: the holder's key moved away in the
          // file (or its row was deleted) while the refold ran (probe 93e F1).
          const heldThen = look.holders.get(folded);
          if (heldThen !== undefined) {
            heldByTampered.push(row.id);
            blockedBy.add(heldThen);
            continue;
          }
          // Another row folded once to the same address (`ẞSS@…` and `SSẞ@…`): which is meant
          // the file cannot tell, and the older by id took it (probe 93a F2). Counted whether or
          // not it matches its seal, as registration counts it: one written into the file and
          // skipped let the other take the address, kept once the row was put right. A row the
          // look did not see (none is written folded once now) is not moved either.
          const claimants = look.claimants.get(folded) ?? 0;
          if (claimants !== 1) {
            (claimants > 1 ? collides : heldByTampered).push(row.id);
            continue;
          }
          // No row holds the address, but a row that does not match its seal may be the one that
          // did: its key moved away in the file, the address went to this row for good, and the
          // key written back was refused as a duplicate (probe 93a F1). Nothing moves while the
          // file holds such a row; the next start after it is put right or removed folds this one.
          if (look.firstTampered !== null) {
            heldByTampered.push(row.id);
            blockedBy.add(look.firstTampered);
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
    if (typeof part !== "string") return { collides, heldByTampered, blockedBy: [...blockedBy] };
    after = part;
  }
}

/**
 * What the refold reads before it writes, in no write transaction: for each address a stored key
 * folded once (holding `ß`) folds to, how many such keys fold to it (`claimants`) and the row
 * holding it then (`holders`, its id as named); and, when some address is held by no row, the
 * first account row that does not match its seal (`firstTampered`, one keyed hash a row). Null
 * when no key is folded once (every start after the upgrade: one read of the partial index).
 */
function lookBeforeFolding(
  db: AppDatabase,
  seal: CredentialSeal,
): {
  claimants: Map<string, number>;
  holders: Map<string, string>;
  firstTampered: string | null;
} | null {
  const claimants = new Map<string, number>();
  const keys = db.$client.query<{ key: unknown }, []>(
    "SELECT email_key AS key FROM users INDEXED BY users_key_folds_again WHERE instr(email_key, 'ß') > 0",
  );
  for (const { key } of keys.iterate()) {
    if (typeof key !== "string") continue;
    const folded = foldCase(key);
    claimants.set(folded, (claimants.get(folded) ?? 0) + 1);
  }
  if (claimants.size === 0) return null;
  const holders = new Map<string, string>();
  const holderOf = db.$client.query<{ id: unknown }, [string]>(
    "SELECT id FROM users WHERE email_key = ?1",
  );
  for (const folded of claimants.keys()) {
    const holder = holderOf.get(folded);
    if (holder !== null) holders.set(folded, spellOut(holder.id, NAMED_ID_LENGTH));
  }
  const anyFree = [...claimants.keys()].some((folded) => !holders.has(folded));
  return {
    claimants,
    holders,
    firstTampered: anyFree ? firstAccountFailingItsSeal(db, seal) : null,
  };
}

/** An id as an error line names it: a row written into the file may hold any length, or no text. */
const NAMED_ID_LENGTH = 64;

/**
 * The id of the first account row that does not match its seal, or null: a read of every row, one
 * keyed hash each, in no write transaction. The seal alone: a row whose key was moved in the file
 * fails it; an erased account's row copied back whole holds its own key, which the holder check
 * sees.
 */
export function firstAccountFailingItsSeal(db: AppDatabase, seal: CredentialSeal): string | null {
  const rows = db.$client.query<Parameters<CredentialSeal["account"]>[0] & { seal: unknown }, []>(
    "SELECT id, email, email_key AS emailKey, password_hash AS passwordHash, role, seal FROM users",
  );
  for (const row of rows.iterate()) {
    if (typeof row.id !== "string" || !sealMatches(seal.account(row), row.seal as string | null)) {
      return spellOut(row.id, NAMED_ID_LENGTH);
    }
  }
  return null;
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
