/**
 * @module
 * Each account's reading: its address's key as a reader takes it (email.ts `readKey`), stored
 * behind the version of the reading, so that a new address that reads as an account's is taken
 * whichever was registered first (probe 90b F2 found only the look-alike registered second; a
 * Latin address registered after its Cyrillic look-alike was a second account).
 *
 * The version is a hash of the reading's rules (the look-alike lists and the revision of the code
 * that applies them) and the runtime's Unicode version (NFKC and the script properties are the
 * runtime's): a release that reads a letter otherwise, or a Bun with newer Unicode tables, finds
 * every stored reading out of date and writes them again once its first start can no longer fail,
 * in short write parts between requests (./readings-upkeep.ts).
 */
import type { Database } from "bun:sqlite";
import { inWritePartsWhileServing } from "../../db/write-parts";
import { readingRulesText } from "../../look-alikes";
import { normalizeEmail, readKey, STORED_ADDRESS_BYTES, STORED_ADDRESS_LONGEST } from "./email";

/** The stored readings' version: 12 hex digits of the SHA-256 of the rules and Unicode's version. */
export const READING_VERSION = new Bun.CryptoHasher("sha256")
  .update(
    JSON.stringify([
      process.versions.unicode ?? "",
      readingRulesText(),
      // How far a stored text is read: a bound changed changes what is stored (probe 94e F1: a
      // reading left empty by a shorter bound was kept, the version being the same).
      STORED_ADDRESS_LONGEST,
      STORED_ADDRESS_BYTES,
    ]),
  )
  .digest("hex")
  .slice(0, 12);

/** What an account with this normalised address stores as its reading. */
export function storedReading(email: string): string {
  return `${READING_VERSION}:${readKey(email)}`;
}

/**
 * The reading of an account's stored address: by its normalised address, which a row stored before
 * normalisation (no key) has not yet (probe 94a F1: `Pay@D.com` read `pay@D.com`, and `рау@d.com`
 * in Cyrillic was registered beside it, and again once a start had normalised it to `Pay@d.com`).
 */
export function readingOf(email: string): string {
  return storedReading(normalizeEmail(email)?.email ?? email);
}

/** The most accounts a registration reads whose reading is not of this version (below). */
export const OTHER_READINGS_READ = 100;

/** The `reading` range of this version's readings: every one is in [from, past). */
const versionRange = (): [string, string] =>
  // ';' follows ':' in ASCII.
  [`${READING_VERSION}:`, `${READING_VERSION};`];

/** Accounts whose reading is missing or of another version, given `versionRange` as ?1 and ?2. */
const OF_ANOTHER_VERSION = "(reading IS NULL OR reading < ?1 OR reading >= ?2)";

/**
 * The ids of up to `limit` accounts whose reading is missing or of another version: none once
 * this release wrote them (./readings-upkeep.ts), but for accounts a process of another release
 * wrote since, until the next maintenance tick writes them again. A registration reads those
 * addresses itself, up to OTHER_READINGS_READ of them, inside its write transaction.
 */
export function idsOfOtherReadings(sqlite: Database, limit: number): string[] {
  return sqlite
    .query<{ id: string }, [string, string, number]>(
      `SELECT id FROM users INDEXED BY users_reading
        WHERE ${OF_ANOTHER_VERSION} LIMIT ?3`,
    )
    .all(...versionRange(), limit)
    .map((row) => row.id);
}

/**
 * How many accounts hold readings of each other version (null: none): what grows when another
 * release's process writes readings (./readings-upkeep.ts). Read through the index, a range of it,
 * as the rewrite reads it.
 */
export function otherReadingsByVersion(sqlite: Database): Map<string | null, number> {
  const counts = sqlite
    .query<{ version: string | null; accounts: number }, [string, string]>(
      `SELECT substr(reading, 1, 13) AS version, count(*) AS accounts
         FROM users INDEXED BY users_reading
        WHERE ${OF_ANOTHER_VERSION}
        GROUP BY 1`,
    )
    .all(...versionRange());
  return new Map(counts.map((count) => [count.version, count.accounts]));
}

/**
 * Writes the reading of every account whose reading is missing or of another version, while the
 * process serves; resolves to how many, and whether it wrote them all (`keepGoing`, asked in each
 * part's transaction, said to stop: another release took the file, probe 95a F1). Read through
 * the index: this version's readings are one text range, the rest are before or after it. A row
 * whose address is not text, or longer than an address can be (written into the file), gets this
 * version with nothing after it, which no address reads as: a 40 MB address held a start for 70 s
 * and 4.6 GB (probe 91a F5), and SQLite hands over none of it. Written in short parts
 * (db/write-parts.ts; probe 94a F4: 200,000 in one transaction held the write lock 1.4–2.5 s), each
 * row only if its address is still the one read, and its reading still out of date (processes
 * writing together write each once).
 */
export async function rewriteReadings(
  sqlite: Database,
  keepGoing: () => boolean,
): Promise<{ written: number; complete: boolean }> {
  const [thisVersion, pastVersion] = versionRange();
  // Bounded in bytes, which SQL reads without the text (probe 94d F1: `length` stops at a NUL, and
  // a value of megabytes behind one was read whole inside a write part, 6.3 s), as registration
  // bounds a row stored before normalisation (94d F3: read to 254 only, a padded one was given no
  // reading, and its look-alike registered).
  const storedAddress =
    "CASE WHEN typeof(email) = 'text' AND octet_length(email) <= ?3 THEN email END";
  const stale = sqlite
    .query<{ rowid: string; email: string | null }, [string, string, number]>(
      `SELECT CAST(rowid AS TEXT) AS rowid, ${storedAddress} AS email
         FROM users INDEXED BY users_reading
        WHERE ${OF_ANOTHER_VERSION}`,
    )
    .all(thisVersion, pastVersion, STORED_ADDRESS_BYTES);
  const write = sqlite.query<unknown, [string, string, number, string, string, string | null]>(
    `UPDATE users SET reading = ?4
      WHERE rowid = CAST(?5 AS INTEGER) AND (${storedAddress}) IS ?6
        AND ${OF_ANOTHER_VERSION}`,
  );
  let written = 0;
  const complete = await inWritePartsWhileServing(
    sqlite,
    stale,
    (row) => {
      const reading =
        typeof row.email === "string" && row.email.length <= STORED_ADDRESS_LONGEST
          ? readingOf(row.email)
          : thisVersion;
      written += write.run(
        thisVersion,
        pastVersion,
        STORED_ADDRESS_BYTES,
        reading,
        row.rowid,
        row.email,
      ).changes;
    },
    keepGoing,
  );
  return { written, complete };
}

/** An account as the file holds its id and address. */
export interface AccountShown {
  id: unknown;
  email: unknown;
}

/** What `checkReadings` found. */
export interface ReadingsCheck {
  /**
   * Accounts whose stored reading is of this version but not their address's: written into the
   * file (a release writes each from the address), and a look-alike of such an account is not
   * found by registration, which looks readings up (probe 90b F2's class, by the file's hand).
   */
  notTheirAddress: { named: AccountShown[]; count: number };
  /**
   * Accounts whose addresses read alike (`pay@d.example` and `рау@d.example` in Cyrillic), in
   * groups of two or more: registered before
   * look-alikes were refused (probe 90b F2), while a release whose readings differed shared the
   * file (94g F1), or written into it.
   */
  lookAlikes: AccountShown[][];
  /** Accounts of another version's reading left out of `lookAlikes` (past OTHERS_COMPARED). */
  othersNotCompared: number;
}

/** An account and where the file holds it. */
type Held = AccountShown & { rowid: number };

/** The accounts a check names one by one; past them, counted. */
const NAMED = 100;
/** Accounts of another version's reading a check compares (each held in memory meanwhile). */
const OTHERS_COMPARED = 10_000;

/**
 * Every account's reading against its address, read as the rewrite reads it (above: an address
 * that is no text, or longer than any address, reads as nothing), and the accounts whose
 * addresses read alike. Streams the rows: memory holds the named rows, the look-alike groups and
 * the accounts whose reading is another version's, which a start of this release writes again.
 */
export function checkReadings(sqlite: Database): ReadingsCheck {
  const [thisVersion, pastVersion] = versionRange();
  const storedAddress =
    "CASE WHEN typeof(email) = 'text' AND octet_length(email) <= ?1 THEN email END";
  const readingFrom = (email: unknown) =>
    typeof email === "string" && email.length <= STORED_ADDRESS_LONGEST ? readingOf(email) : null;
  const notTheirAddress: AccountShown[] = [];
  let mismatched = 0;
  const others = new Map<string, Held[]>();
  let othersNotCompared = 0;
  const rows = sqlite
    .query<Held & { address: string | null; reading: unknown }, [number]>(
      `SELECT rowid, id, email, ${storedAddress} AS address, reading FROM users ORDER BY rowid`,
    )
    .iterate(STORED_ADDRESS_BYTES);
  for (const row of rows) {
    const expected = readingFrom(row.address);
    const shown = { rowid: row.rowid, id: row.id, email: row.email };
    const ofThisVersion =
      typeof row.reading === "string" && row.reading >= thisVersion && row.reading < pastVersion;
    if (ofThisVersion) {
      if (row.reading !== expected) {
        mismatched++;
        if (notTheirAddress.length < NAMED) notTheirAddress.push({ id: row.id, email: row.email });
      }
      continue;
    }
    if (expected === null) continue;
    if (others.size >= OTHERS_COMPARED && !others.has(expected)) {
      othersNotCompared++;
      continue;
    }
    const group = others.get(expected);
    if (group === undefined) others.set(expected, [shown]);
    else group.push(shown);
  }
  // This version's readings alike, through the index; each account's own reading checked, so a
  // reading written into the file makes no group (it is named above).
  const repeated = sqlite
    .query<{ reading: string }, [string, string]>(
      `SELECT reading FROM users INDEXED BY users_reading
        WHERE reading >= ?1 AND reading < ?2 GROUP BY reading HAVING count(*) > 1`,
    )
    .all(thisVersion, pastVersion);
  const holders = sqlite.query<Held & { address: string | null }, [number, string]>(
    `SELECT rowid, id, email, ${storedAddress} AS address FROM users WHERE reading = ?2`,
  );
  const readAs = (reading: string) =>
    holders
      .all(STORED_ADDRESS_BYTES, reading)
      .filter((row) => readingFrom(row.address) === reading);
  const lookAlikes: AccountShown[][] = [];
  // Each group in the order the accounts were written: the first is the one a look-alike joined.
  const keep = (group: Held[]) => {
    if (group.length < 2) return;
    group.sort((a, b) => a.rowid - b.rowid);
    lookAlikes.push(group.map(({ id, email }) => ({ id, email })));
  };
  for (const { reading } of repeated) {
    keep([...readAs(reading), ...(others.get(reading) ?? [])]);
    others.delete(reading);
  }
  for (const [reading, group] of others) keep([...readAs(reading), ...group]);
  return {
    notTheirAddress: { named: notTheirAddress, count: mismatched },
    lookAlikes,
    othersNotCompared,
  };
}
