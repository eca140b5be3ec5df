/**
 * @module
 * Stored address keys brought to today's folding (email.ts `foldCase`). An earlier release folded
 * a key once, which left the capital `ẞ` as `ß` where every other spelling of the address folds to
 * `ss`: an account registered as `STRAẞE@…` could not be found by `strasse@…` and the other way
 * round (probe 91i F4). Such keys are the ones holding `ß` (no folded key holds it now), found
 * through a partial index so that a start does not read every account.
 */
import { and, asc, eq, isNull, sql } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { sealMatches } from "../../db/row-seal";
import { users } from "../../db/schema";
import { inWriteParts } from "../../db/write-parts";
import { spellOut } from "../../logging/spell-out";
import type { CredentialSeal } from "../../plugins/auth/seal";
import { sealedAccountColumns } from "../../plugins/auth/sealed-columns";
import { checkEmail, foldCase, STORED_ADDRESS_BYTES, STORED_ADDRESS_LONGEST } from "./email";
import { storedReading } from "./readings";

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
 * they are reported when they are used. In short write parts (db/write-parts.ts), so processes
 * starting together share the work and a running service writes between two.
 */
export function refoldEmailKeys(
  db: AppDatabase,
  seal: CredentialSeal,
): { collides: string[]; heldByTampered: string[]; blockedBy: string[] } {
  const matches = (row: SealedRow) =>
    typeof row.id === "string" &&
    sealMatches(seal.account(row), row.seal) &&
    !seal.erased(`user:${row.id}`);
  // Everything is decided on one look at the file, in one read snapshot and no write transaction
  // (probe 93c F1, 93e F2, 93g F3: scans and parts that could move nothing held the write lock for
  // seconds at every start and command; 93e F1: reads in separate snapshots were raced); the write
  // parts then touch only the rows it says move, each checked again as the look saw it.
  const { look, firstTampered } = db.$client
    .transaction(() => {
      const look = lookBeforeFolding(db, matches);
      // Read only when a key would move: one keyed hash for every account.
      return {
        look,
        firstTampered: look.moves.length > 0 ? firstAccountFailingItsSeal(db, seal) : null,
      };
    })
    .deferred();
  const { collides, heldByTampered, blockedBy } = look;
  // No row holds the address, but a row that does not match its seal may be the one that did: its
  // key moved away in the file, the address went to the row folded once for good, and the key
  // written back was refused as a duplicate (probe 93a F1). Nothing moves while the file holds
  // such a row; the next start after it is put right or removed folds them.
  if (firstTampered !== null) {
    heldByTampered.push(...look.moves.map((move) => move.id));
    blockedBy.add(firstTampered);
    return { collides, heldByTampered, blockedBy: [...blockedBy] };
  }
  inWriteParts(db.$client, look.moves, (move) => {
    const row = db.select(sealedAccountColumns).from(users).where(eq(users.id, move.id)).get();
    // Folded by another process starting beside this one: done (probe 93h F5).
    if (row?.emailKey === move.to) return;
    // Changed since the look (in the file, or by another process starting): left as it is.
    if (row === undefined || row.emailKey !== move.from || !matches(row)) {
      heldByTampered.push(move.id);
      return;
    }
    const holder = db.select({ id: users.id }).from(users).where(eq(users.emailKey, move.to)).get();
    if (holder !== undefined) {
      collides.push(move.id);
      return;
    }
    const emailKey = move.to;
    db.update(users)
      .set({ emailKey, seal: seal.account({ ...row, emailKey }) })
      .where(eq(users.id, move.id))
      .run();
  });
  return { collides, heldByTampered, blockedBy: [...blockedBy] };
}

type SealedRow = Parameters<CredentialSeal["account"]>[0] & { seal: string | null };

/** An account's sealed columns, as the seal reads them. */
const SEALED_ACCOUNTS =
  "SELECT id, email, email_key AS emailKey, password_hash AS passwordHash, role, seal FROM users";

/**
 * The rows whose key an earlier release folded once (holding `ß`), through the partial index; a
 * key longer than a stored address can be (written into the file) is none, and not read (probe
 * 94e F3: folding one of 9 MB took 5 s and 650 MB at every start and command).
 */
function foldedOnceRows(db: AppDatabase): SealedRow[] {
  return db.$client
    .query<SealedRow, [number]>(
      `${SEALED_ACCOUNTS} INDEXED BY users_key_folds_again
        WHERE instr(email_key, 'ß') > 0 AND octet_length(email_key) <= ?1`,
    )
    .all(STORED_ADDRESS_BYTES)
    .filter(
      (row) => typeof row.emailKey !== "string" || row.emailKey.length <= STORED_ADDRESS_LONGEST,
    );
}

/** An address's key, as registration checks it; null when it is no address. */
export type AddressKeyOf = (email: string) => string | null;

export const addressKeyOf: AddressKeyOf = (email) => {
  const verdict = checkEmail(email);
  return verdict.ok ? verdict.key : null;
};

/**
 * The rows stored before normalisation (no key), each with its address's key as registration
 * checks it (`keyOf`); a row whose address is none (not text, longer than STORED_ADDRESS_LONGEST,
 * not an address) is left out: it claims none.
 */
function* unkeyedRows(
  db: AppDatabase,
  keyOf: AddressKeyOf = addressKeyOf,
): Generator<{ id: unknown; email: unknown; key: string }> {
  // Bounded in bytes before the text is read (probe 94a F3: one of 15 MB held each registration
  // 3–8 s, every request waiting on it), then in characters.
  const rows = db.$client.query<{ id: unknown; email: string }, [number]>(
    "SELECT id, email FROM users WHERE email_key IS NULL AND typeof(email) = 'text' AND octet_length(email) <= ?1",
  );
  for (const { id, email } of rows.iterate(STORED_ADDRESS_BYTES)) {
    if (email.length > STORED_ADDRESS_LONGEST) continue;
    const key = keyOf(email);
    if (key !== null) yield { id, email, key };
  }
}

/**
 * Rows stored before addresses were normalised have no `email_key`. Each gets its normalised
 * address and key now; a row whose address is invalid under today's rules, collapses onto an
 * address another account already holds, or that another such row (or a key folded once) would
 * take too, is set aside (key left null: it can no longer sign in by email; `setAside`) until an
 * operator resolves it. Decided, as the refold is, on one look in one read snapshot, and no address
 * is given while an account row fails its seal (probe 93a F1: the holder's key moved away in the
 * file; those rows are `waiting`, on the row `blockedBy` names); then write parts give what it
 * decided, each row checked again as the look saw it, so processes starting together do it once.
 */
export function normaliseUnkeyedRows(
  db: AppDatabase,
  seal: CredentialSeal,
): { setAside: string[]; waiting: string[]; blockedBy: string | null } {
  const setAside: string[] = [];
  const holds = db.$client.query<{ id: unknown }, [string]>(
    "SELECT id FROM users WHERE email_key = ?1",
  );
  const { moves, firstTampered } = db.$client
    .transaction(() => {
      const moves: { row: (typeof rows)[number]; email: string; key: string }[] = [];
      const rows = db
        .select(sealedAccountColumns)
        .from(users)
        .where(isNull(users.emailKey))
        .orderBy(asc(users.id))
        .all();
      if (rows.length === 0) return { moves, firstTampered: null };
      // A value read from the file may be anything: a BLOB written there stopped every start with
      // a TypeError that named no row (probe 79c F2). It is no valid address.
      const verdicts = rows.map((row) =>
        typeof row.email === "string" && row.email.length <= STORED_ADDRESS_LONGEST
          ? checkEmail(row.email)
          : null,
      );
      // Each address checked once: these verdicts count the unkeyed claimants too (checked again
      // by a second read, 260,000 of them took a start 59–79 s: probe 94e).
      const unkeyedKeys = verdicts.flatMap((verdict) => (verdict?.ok ? [verdict.key] : []));
      const claimants = addressClaimants(db, foldedOnceRows(db), unkeyedKeys);
      for (const [index, row] of rows.entries()) {
        const verdict = verdicts[index] ?? null;
        // Held by another row, even one written into the file: left aside (its key null), which
        // the next start undoes once the holder is gone; taking the key from a tampered holder
        // made that tamper's undoing fail for good (probe 92c F1). Wanted by another row stored
        // so, or by a key folded once: none takes it (probe 93g F2: the oldest by `created_at`,
        // which no seal covers, took it, and someone with the file chose which).
        if (
          verdict === null ||
          !verdict.ok ||
          holds.get(verdict.key) !== null ||
          (claimants.get(verdict.key) ?? 0) > 1
        ) {
          setAside.push(row.id);
          continue;
        }
        moves.push({ row, email: verdict.email, key: verdict.key });
      }
      return {
        moves,
        firstTampered: moves.length > 0 ? firstAccountFailingItsSeal(db, seal) : null,
      };
    })
    .deferred();
  if (firstTampered !== null) {
    return { setAside, waiting: moves.map(({ row }) => row.id), blockedBy: firstTampered };
  }
  // In parts with a pause between two, as the refold (probe 93h F1: 100,000 rows in one
  // transaction held the write lock 13 s; the running service answered 503 and a process starting
  // beside it exited).
  inWriteParts(db.$client, moves, ({ row, email, key }) => {
    const now = db.select(sealedAccountColumns).from(users).where(eq(users.id, row.id)).get();
    // Given its address by another process starting beside this one: done (93h F5).
    if (now?.emailKey === key) return;
    // Changed since the look, or its address taken meanwhile: left aside.
    if (
      now === undefined ||
      now.emailKey !== null ||
      now.email !== row.email ||
      holds.get(key) !== null
    ) {
      setAside.push(row.id);
      return;
    }
    const intact = seal.intact.account(now);
    // Its reading too, of the address it now has (probe 94a F1: the one of the address as stored
    // was kept, and a look-alike of the normalised address was registered beside it).
    const address = { email, emailKey: key, reading: storedReading(email) };
    // Resealed only if it was sealed as it stood: a row written into the file stays refused.
    db.update(users)
      .set(intact ? { ...address, seal: seal.account({ ...now, ...address }) } : address)
      .where(eq(users.id, row.id))
      .run();
  });
  return { setAside, waiting: [], blockedBy: null };
}

/**
 * What the refold decides on one look, writing nothing: for each row whose key was folded once
 * and that matches its seal, whether its address is held (by a row that matches its seal:
 * `collides`; by one that does not: `heldByTampered`, with that row in `blockedBy`), wanted by
 * another claimant (`collides`: another key folded once, or a row stored before normalisation,
 * whichever is older or fails its seal, probe 93a F2, 93g F2), or free (`moves`).
 */
function lookBeforeFolding(
  db: AppDatabase,
  matches: (row: SealedRow) => boolean,
): {
  collides: string[];
  heldByTampered: string[];
  blockedBy: Set<string>;
  moves: { id: string; from: string; to: string }[];
} {
  const collides: string[] = [];
  const heldByTampered: string[] = [];
  const blockedBy = new Set<string>();
  const moves: { id: string; from: string; to: string }[] = [];
  const rows = foldedOnceRows(db);
  if (rows.length === 0) return { collides, heldByTampered, blockedBy, moves };
  const claimants = addressClaimants(db, rows);
  const holderOf = db.$client.query<SealedRow, [string]>(`${SEALED_ACCOUNTS} WHERE email_key = ?1`);
  for (const row of rows) {
    // A row that does not match its seal is left exactly as it is (probe 92a F2, 92c F1).
    if (typeof row.emailKey !== "string" || !matches(row)) continue;
    // The domain is ASCII (IDNA), which folding leaves as it is.
    const folded = foldCase(row.emailKey);
    if (folded === row.emailKey) continue;
    const id = row.id as string;
    const holder = holderOf.get(folded);
    if (holder !== null) {
      if (matches(holder)) collides.push(id);
      else {
        heldByTampered.push(id);
        blockedBy.add(spellOut(holder.id, NAMED_ID_LENGTH));
      }
    } else if ((claimants.get(folded) ?? 0) > 1) collides.push(id);
    else moves.push({ id, from: row.emailKey, to: folded });
  }
  return { collides, heldByTampered, blockedBy, moves };
}

/**
 * For each address, how many rows without it would take it at start: keys folded once (`rows`,
 * holding `ß`) and rows stored before normalisation (no key), whose address is checked as
 * registration checks it. Counted whether or not they match their seals, as registration counts
 * them.
 */
function addressClaimants(
  db: AppDatabase,
  foldedOnce: readonly { emailKey: unknown }[] = foldedOnceRows(db),
  unkeyedKeys: Iterable<string> = Array.from(unkeyedRows(db), (row) => row.key),
): Map<string, number> {
  const claimants = new Map<string, number>();
  const add = (key: string) => claimants.set(key, (claimants.get(key) ?? 0) + 1);
  for (const { emailKey } of foldedOnce) if (typeof emailKey === "string") add(foldCase(emailKey));
  for (const key of unkeyedKeys) add(key);
  return claimants;
}

/** An id as an error line names it: a row written into the file may hold any length, or no text. */
const NAMED_ID_LENGTH = 64;

/**
 * The id of the first account row that does not match its seal, or null: a read of every row, one
 * keyed hash each, in no write transaction. The seal alone: a row whose key was moved in the file
 * fails it; an erased account's row copied back whole holds its own key, which the holder check
 * sees.
 */
function firstAccountFailingItsSeal(db: AppDatabase, seal: CredentialSeal): string | null {
  for (const row of db.$client.query<SealedRow, []>(SEALED_ACCOUNTS).iterate()) {
    if (typeof row.id !== "string" || !sealMatches(seal.account(row), row.seal)) {
      return spellOut(row.id, NAMED_ID_LENGTH);
    }
  }
  return null;
}

/**
 * The keys the rows stored before normalisation (no key) claim: a start leaves such rows aside
 * while another such row, or a key folded once, would take the address too (probe 93g F2), and
 * they hold it meanwhile, as `unfoldedKeysFoldingTo`'s rows do. A read of every such row: kept,
 * and read again when `unkeyedRowsMark` changes (AuthService).
 */
export function unkeyedClaimedKeys(db: AppDatabase, keyOf?: AddressKeyOf): Set<string> {
  const keys = new Set<string>();
  for (const row of unkeyedRows(db, keyOf)) keys.add(row.key);
  return keys;
}

/**
 * What tells that the rows stored before normalisation may have changed: their count and the sum
 * of their rowids, read from the key index alone (a row folded, set aside, deleted or copied back
 * by this process changes it), and SQLite's `data_version`, which any other connection's commit
 * changes (another process, a CLI command, a backup restored online: probe 94g F2, the rows put
 * right by a restore kept the count and rowids, and their address was registered).
 */
export function unkeyedRowsMark(db: AppDatabase): string {
  const mark = db.$client
    .query<{ rows: number; ids: number }, []>(
      "SELECT count(*) AS rows, total(rowid) AS ids FROM users WHERE email_key IS NULL",
    )
    .get();
  const written = db.$client.query<{ data_version: number }, []>("PRAGMA data_version").get();
  return `${mark?.rows ?? 0}:${mark?.ids ?? 0}:${written?.data_version ?? 0}`;
}

/** Those rows themselves, for an operator naming the address (AuthService `setAsideAlike`). */
export function unkeyedRowsClaiming(
  db: AppDatabase,
  key: string,
): { id: unknown; email: unknown }[] {
  const claiming: { id: unknown; email: unknown }[] = [];
  for (const row of unkeyedRows(db)) {
    if (row.key === key) claiming.push({ id: row.id, email: row.email });
  }
  return claiming;
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
      and(
        sql`instr(${users.emailKey}, 'ß') > 0`,
        // In bytes, which SQL reads without the text (`length` stops at a NUL: probe 94d F1).
        sql`octet_length(${users.emailKey}) <= ${4 * key.length}`,
      ),
    )
    .all()
    .filter(
      (row) =>
        typeof row.emailKey === "string" &&
        row.emailKey.length <= key.length &&
        foldCase(row.emailKey) === key,
    )
    .map(({ id, email }) => ({ id, email }));
}
