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
 * every stored reading out of date and writes them again at its first start, in short write parts
 * (processes starting together write each once).
 */
import type { Database } from "bun:sqlite";
import { inWriteParts } from "../../db/write-parts";
import { readingRulesText } from "../../look-alikes";
import { MAX_EMAIL_LENGTH, normalizeEmail, readKey } from "./email";

/** The stored readings' version: 12 hex digits of the SHA-256 of the rules and Unicode's version. */
export const READING_VERSION = new Bun.CryptoHasher("sha256")
  .update(JSON.stringify([process.versions.unicode ?? "", readingRulesText()]))
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

/**
 * Writes the reading of every account whose reading is missing or of another version; returns
 * how many. Read through the index: this version's readings are one text range, the rest are
 * before or after it. A row whose address is not text, or longer than an address can be (written
 * into the file), gets this version with nothing after it, which no address reads as: a 40 MB
 * address held a start for 70 s and 4.6 GB (probe 91a F5), and SQLite hands over none of it.
 * Written in short parts (db/write-parts.ts; probe 94a F4: 200,000 in one transaction held the
 * write lock 1.4–2.5 s), each row only if its address is still the one read, and its reading still
 * out of date (processes starting together write each once).
 */
export function fillReadings(sqlite: Database): number {
  const thisVersion = `${READING_VERSION}:`;
  // ';' follows ':' in ASCII: every reading of this version is in [thisVersion, pastVersion).
  const pastVersion = `${READING_VERSION};`;
  const stale = sqlite
    .query<{ rowid: string; email: string | null }, [string, string, number]>(
      `SELECT CAST(rowid AS TEXT) AS rowid,
              CASE WHEN typeof(email) = 'text' AND length(email) <= ?3 THEN email END AS email
         FROM users INDEXED BY users_reading
        WHERE reading IS NULL OR reading < ?1 OR reading >= ?2`,
    )
    .all(thisVersion, pastVersion, MAX_EMAIL_LENGTH);
  const write = sqlite.query<unknown, [string, string, string | null, string, string, number]>(
    `UPDATE users SET reading = ?1
      WHERE rowid = CAST(?2 AS INTEGER)
        AND (CASE WHEN typeof(email) = 'text' AND length(email) <= ?6 THEN email END) IS ?3
        AND (reading IS NULL OR reading < ?4 OR reading >= ?5)`,
  );
  let written = 0;
  inWriteParts(sqlite, stale, (row) => {
    const reading = typeof row.email === "string" ? readingOf(row.email) : thisVersion;
    written += write.run(
      reading,
      row.rowid,
      row.email,
      thisVersion,
      pastVersion,
      MAX_EMAIL_LENGTH,
    ).changes;
  });
  return written;
}
