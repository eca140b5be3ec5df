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

/**
 * A row's address as the readings read it, given STORED_ADDRESS_BYTES as `param`: bounded in bytes,
 * which SQL reads without the text (probe 94d F1: `length` stops at a NUL, and a value of megabytes
 * behind one was read whole inside a write part, 6.3 s), as registration bounds a row stored before
 * normalisation (94d F3: read to 254 only, a padded one was given no reading, and its look-alike
 * registered). NULL when it is no text or longer.
 */
const storedAddressBoundBy = (param: string) =>
  `CASE WHEN typeof(email) = 'text' AND octet_length(email) <= ${param} THEN email END`;

/**
 * The reading of a row's address as `storedAddressBoundBy` reads it: this version with nothing
 * after it for one that is no address, which no address reads as. The rewrite writes it and the
 * check expects it, one function for both (probe 96a F6: the check first expected another).
 */
function readingOfStored(address: string | null): string {
  return address !== null && address.length <= STORED_ADDRESS_LONGEST
    ? readingOf(address)
    : versionRange()[0];
}

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
  const storedAddress = storedAddressBoundBy("?3");
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
      written += write.run(
        thisVersion,
        pastVersion,
        STORED_ADDRESS_BYTES,
        readingOfStored(row.email),
        row.rowid,
        row.email,
      ).changes;
    },
    keepGoing,
  );
  return { written, complete };
}

/**
 * An account as a check names it: its id as the file holds it, text cut to 64 characters (an id
 * written into the file can be any length: probe 96a F1, 10 MB each), and its address, bounded as
 * an address is (null when it is none).
 */
export interface AccountNamed {
  id: unknown;
  address: string | null;
}

/** What `checkReadings` found. */
export interface ReadingsCheck {
  /**
   * Accounts whose stored reading is of this version but not their address's: changed in the
   * file (a release writes each from the address), and registration, which looks readings up,
   * does not find such an account's look-alikes. The first 100, and how many.
   */
  notTheirAddress: { named: AccountNamed[]; count: number };
  /**
   * Accounts whose addresses read alike (`pay@d.example` and `рау@d.example` in Cyrillic), in
   * groups of two or more: registered before look-alikes were refused (probe 90b F2), while a
   * release whose readings differed shared the file (94g F1), or written into it. Each names its
   * first 10 accounts by id (which the seal covers: a UUIDv7 tells when it was made; the row's
   * place in the file, 96a F4, can be changed), and counts them all.
   */
  lookAlikes: { named: AccountNamed[]; count: number }[];
  /** Accounts of another version's reading left out of `lookAlikes` (past OTHERS_COMPARED). */
  othersNotCompared: number;
}

/** The accounts a check names one by one; past them, counted. */
const NAMED = 100;
/** The accounts a look-alike group names; past them, counted. */
const NAMED_IN_GROUP = 10;
/** Distinct readings of another version's accounts a check compares (each held meanwhile). */
const OTHERS_COMPARED = 10_000;

/** A look-alike group as it is gathered: its first accounts by id, and how many. */
interface Group {
  named: AccountNamed[];
  count: number;
}

/** An id's order: text as it sorts, anything else (written into the file) after it. */
const idOrder = (a: AccountNamed, b: AccountNamed): number => {
  const left = typeof a.id === "string" ? a.id : null;
  const right = typeof b.id === "string" ? b.id : null;
  if (left === null || right === null) return left === right ? 0 : left === null ? 1 : -1;
  return left < right ? -1 : left > right ? 1 : 0;
};

function joinGroup(group: Group, account: AccountNamed): void {
  group.count++;
  group.named.push(account);
  group.named.sort(idOrder);
  if (group.named.length > NAMED_IN_GROUP) group.named.pop();
}

/**
 * Every account's reading against its address, as the rewrite reads it (above: an address that is
 * no text, or longer than any address, reads as this version with nothing after it), and the
 * accounts whose addresses read alike. Streams the rows; what it holds is bounded: the named
 * accounts, each group's first ten, and the readings of accounts whose reading is another
 * version's (up to OTHERS_COMPARED), which a start of this release writes again. Read without
 * naming an index: one dropped from the file gives no error here (the schema check names it).
 */
export function checkReadings(sqlite: Database): ReadingsCheck {
  const [thisVersion, pastVersion] = versionRange();
  const storedAddress = storedAddressBoundBy("?1");
  // Cut in SQL, before the value is handed over: bun:sqlite hands over a whole value, and `length`
  // of a text stops at a NUL (probe 96b F1: 10 MB behind one were held and printed whole); a
  // blob's length is its bytes (96b F2).
  const namedId = `CASE
      WHEN typeof(id) = 'text' AND (octet_length(id) > 256 OR length(id) > 64)
        THEN substr(id, 1, 64) || '…'
      WHEN typeof(id) = 'blob' AND length(id) > 32 THEN substr(id, 1, 32)
      ELSE id END`;
  const notTheirAddress: AccountNamed[] = [];
  let mismatched = 0;
  const others = new Map<string, Group>();
  let othersNotCompared = 0;
  const rows = sqlite
    .query<AccountNamed & { reading: unknown }, [number]>(
      `SELECT ${namedId} AS id, ${storedAddress} AS address, reading FROM users`,
    )
    .iterate(STORED_ADDRESS_BYTES);
  for (const row of rows) {
    const expected = readingOfStored(row.address);
    const account = { id: row.id, address: row.address };
    const ofThisVersion =
      typeof row.reading === "string" && row.reading >= thisVersion && row.reading < pastVersion;
    if (ofThisVersion) {
      if (row.reading !== expected) {
        mismatched++;
        if (notTheirAddress.length < NAMED) notTheirAddress.push(account);
      }
      continue;
    }
    // An address that reads as nothing reads as no other.
    if (expected === thisVersion) continue;
    let group = others.get(expected);
    if (group === undefined) {
      if (others.size >= OTHERS_COMPARED) {
        othersNotCompared++;
        continue;
      }
      group = { named: [], count: 0 };
      others.set(expected, group);
    }
    joinGroup(group, account);
  }
  // This version's readings alike; each account's own reading checked again, so a reading
  // changed in the file makes no group (it is named above).
  const repeated = sqlite
    .query<{ reading: string }, [string, string]>(
      `SELECT reading FROM users WHERE reading > ?1 AND reading < ?2
        GROUP BY reading HAVING count(*) > 1`,
    )
    .all(thisVersion, pastVersion);
  const holders = sqlite.query<AccountNamed, [number, string]>(
    `SELECT ${namedId} AS id, ${storedAddress} AS address FROM users WHERE reading = ?2`,
  );
  const lookAlikes: Group[] = [];
  const gather = (reading: string, group: Group) => {
    for (const holder of holders.iterate(STORED_ADDRESS_BYTES, reading)) {
      if (readingOfStored(holder.address) === reading) joinGroup(group, holder);
    }
    if (group.count > 1) lookAlikes.push(group);
  };
  for (const { reading } of repeated) {
    gather(reading, others.get(reading) ?? { named: [], count: 0 });
    others.delete(reading);
  }
  for (const [reading, group] of others) gather(reading, group);
  return {
    notTheirAddress: { named: notTheirAddress, count: mismatched },
    lookAlikes,
    othersNotCompared,
  };
}
