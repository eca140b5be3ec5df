/**
 * @module
 * Which release's readings (modules/auth/readings.ts) the accounts in a file are stored by, as a
 * mark the schema guard sees: an index on `users` named for the reading version, over no row
 * (`WHERE 0`: never used, never written), of its `id`, which no migration drops (one of `reading`
 * stopped a migration dropping that column). Two releases whose readings differ must not serve one
 * file together: each looks up readings of its own version only, so while both ran, each let a
 * look-alike of the other's accounts register (probe 94g F1: a rolling upgrade, or an older
 * release started after a newer one).
 *
 * A start takes the file for its version: it drops another version's mark and makes its own in
 * one write, before it writes the readings again. A running process of the other version refuses
 * registrations from then on (the mark is no longer its own) and stops at its next maintenance
 * tick, its schema changed. Releases from before the mark refuse any index on their tables they
 * did not make: they cannot start on a marked file, and their running processes stop at their next
 * tick too. Whichever start is the latest serves; the other stops, loudly, instead of both serving
 * and neither seeing the other's look-alikes.
 */
import type { Database } from "bun:sqlite";

const MARK_NAME = /^users_readings_([0-9a-f]{12})$/;

/** The name of `version`'s mark. */
export function readingsMarkName(version: string): string {
  return `users_readings_${version}`;
}

/** The mark exactly as SQLite stores it in `sqlite_master` (the guard compares it to the character). */
export function readingsMarkSql(version: string): string {
  return `CREATE INDEX "${readingsMarkName(version)}" ON "users" ("id") WHERE 0`;
}

/**
 * The version an index on `users` marks, when it is a mark exactly as a start makes it; null for
 * any other index (one named like a mark but made otherwise stays someone else's index).
 */
export function markedVersion(name: string, sql: string | null): string | null {
  const version = MARK_NAME.exec(name)?.[1];
  return version !== undefined && sql === readingsMarkSql(version) ? version : null;
}

/** The versions the file's marks name (one, or none, but for a start interrupted by another). */
export function readingsMarks(sqlite: Database): string[] {
  return sqlite
    .query<{ name: string; sql: string | null }, []>(
      `SELECT name, sql FROM main.sqlite_master
        WHERE type = 'index' AND tbl_name = 'users' AND name LIKE 'users\\_readings\\_%' ESCAPE '\\'`,
    )
    .all()
    .map((index) => markedVersion(index.name, index.sql))
    .filter((version): version is string => version !== null);
}

/** The marks of versions other than `version`: another release's readings. */
export function otherReadingsMarks(sqlite: Database, version: string): string[] {
  return readingsMarks(sqlite).filter((marked) => marked !== version);
}

/**
 * Takes the file for `version`: drops every other version's mark and makes this one's, in one
 * immediate transaction (processes starting together make it once). Returns what the file held
 * before: the other versions it dropped, and whether this version's mark was there already.
 */
export function takeReadingsMark(
  sqlite: Database,
  version: string,
): { dropped: string[]; held: boolean } {
  return sqlite
    .transaction(() => {
      const marks = readingsMarks(sqlite);
      const dropped = marks.filter((marked) => marked !== version);
      for (const other of dropped) sqlite.run(`DROP INDEX "${readingsMarkName(other)}"`);
      const held = marks.includes(version);
      if (!held) sqlite.run(readingsMarkSql(version));
      return { dropped, held };
    })
    .immediate();
}

/**
 * Whether the file's readings are still no other version's than `version`: the marks are read
 * again only when the schema changed (one `PRAGMA schema_version` read otherwise), so a
 * registration can ask inside its write transaction, where no start can take the file meanwhile.
 */
export function readingsMarkWatch(sqlite: Database, version: string): () => boolean {
  let checkedAt: number | null = null;
  let ours = true;
  return () => {
    const now = sqlite
      .query<{ schema_version: number }, []>("PRAGMA schema_version")
      .get()!.schema_version;
    if (now !== checkedAt) {
      ours = otherReadingsMarks(sqlite, version).length === 0;
      checkedAt = now;
    }
    return ours;
  };
}
