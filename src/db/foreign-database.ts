/**
 * @module
 * Palisade makes its database only where there is none: at a path that names no file, or in an
 * empty one. A start or a command that migrates (`db:migrate`, `users:create`, `keys:create`) given
 * a DATABASE_PATH that names another application's SQLite file (a mistyped path, Grafana's
 * `grafana.db`) added Palisade's tables to it, and served from it (probe 43c F2). Before anything is
 * written, a read-only look (db/file-look.ts) tells a file that is Palisade's, or on its way to
 * being it, from one that is someone else's.
 *
 * Empty means nothing at all: no schema entry of any kind, and a header no application marked
 * (`application_id` and `user_version` 0; Palisade sets neither). A file of views only, or one that
 * only carries another application's id, is someone's (probe 44b F2). The one file on its way is
 * what a first start stopped between making drizzle's migrations table and filling it leaves: that
 * table alone, exactly as Palisade's migrator makes it, empty; a table of that name in any other
 * shape is another's, and was migrated in full before the schema guard refused it (probe 44b F3).
 */
import { Database } from "bun:sqlite";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { type FileLook, lookAt, MIGRATIONS_TABLE, readSchema, type SchemaEntry } from "./file-look";
import { MIGRATIONS_TABLE_DDL } from "./migrate";
import { MIGRATION_TAG_BY_MILLIS } from "./migrations";

/** Tables every Palisade database has from its first migration on, and no other application's. */
export const PALISADE_TABLES = ["audit_events", "rate_limit_counters", "users"] as const;

/** What the refusal of a file that is no SQLite database says of it, after `DATABASE_PATH <path>`. */
export const NOT_SQLITE = "is not a usable SQLite database: it does not start as one";

/** What the refusal of a file with Palisade's tables and no record of its migrations says. */
export const PALISADE_ALTERED =
  "holds Palisade's tables but no record of its migrations: the file was altered; restore it from a backup";

/**
 * Why the file at `path` must not be written as Palisade's database (the end of a line that begins
 * `DATABASE_PATH <path>`), or null when it may: none there, an empty one, or Palisade's. A file that
 * is no SQLite database is left to the open, which says so. Throws SQLite's error for a lock.
 */
export function whyNotPalisades(path: string, busyTimeoutMs: number): string | null {
  const kind = notAFile(path);
  if (kind !== null) return notAFileReason(kind);
  // Said here, before the configuration makes a development audit key beside it (probe 45a F4: a
  // YAML file named by mistake got one, though nothing else was written).
  if (notSqlite(path)) return `${NOT_SQLITE} (check the path)`;
  const found = lookAt(path, busyTimeoutMs);
  if (found === null || isPalisades(found)) return null;
  if (PALISADE_TABLES.every((name) => found.tables.has(name))) return PALISADE_ALTERED;
  return `holds no Palisade database (${whatOthersHold(found)}): Palisade makes its database only at a path that names no file or in an empty file, and writes nothing to another's (check the path)`;
}

/**
 * What `path` names when it is there and is no regular file (a link is followed), or null. A FIFO
 * hung the start and every command at their first read, deaf to SIGTERM (probe 46c F5).
 */
export function notAFile(path: string): string | null {
  let stats: ReturnType<typeof statSync>;
  try {
    stats = statSync(path, { throwIfNoEntry: false });
  } catch {
    // Cannot be looked at (its directory's mode): the open says why.
    return null;
  }
  if (stats === undefined || stats.isFile()) return null;
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isDirectory()) return "a directory";
  if (stats.isSocket()) return "a socket";
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return "a device";
  return "not a regular file";
}

/** What the refusal of a path that names no regular file says, after `DATABASE_PATH <path>`. */
export function notAFileReason(kind: string): string {
  return `is not a regular file (${kind}): the database is a file (check the path)`;
}

/** SQLite's file header: every database file of one page or more starts with it. */
const SQLITE_HEADER = Buffer.from("SQLite format 3\u0000", "latin1");

/**
 * Whether `path` is a file with content that is not SQLite's: its first bytes are not the header.
 * A file that cannot be read, or is empty, is left to the open (which says why).
 */
export function notSqlite(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return false;
  }
  try {
    const start = Buffer.alloc(SQLITE_HEADER.length);
    const read = readSync(fd, start, 0, start.length, 0);
    // A database file is a page at least: shorter than the header, it is none.
    return read > 0 && (read < SQLITE_HEADER.length || !start.equals(SQLITE_HEADER));
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}

/** No schema entry of any kind, and no application's mark in the header. */
export function isEmpty(found: FileLook): boolean {
  return found.schema.length === 0 && !markedByAnApplication(found);
}

/**
 * What a first start stopped before its migrations' transaction leaves (db/migrate.ts): drizzle's
 * migrations table alone, as Palisade's migrator makes it, empty; or another process's first start
 * at that point.
 */
export function isStoppedFirstStart(found: FileLook): boolean {
  return (
    found.migrations.length === 0 &&
    !markedByAnApplication(found) &&
    Bun.deepEquals(found.schema, stoppedFirstStartSchema(), true)
  );
}

/** What makes a file that is not Palisade's someone else's, for the line that refuses it. */
export function whatOthersHold(found: FileLook): string {
  if (found.tables.size > 0) return "another application's tables";
  if (found.schema.length > 0) {
    // A kind written into sqlite_master by hand is not repeated: it can hold any character.
    const kinds = new Set(found.schema.map((entry) => KINDS[entry.type] ?? "schema entries"));
    return `another application's ${[...kinds].sort().join(" and ")}`;
  }
  return `another application's mark: application_id ${found.applicationId}, user_version ${found.userVersion}`;
}

const KINDS: Readonly<Record<string, string>> = {
  table: "tables",
  index: "indexes",
  view: "views",
  trigger: "triggers",
};

function isPalisades(found: FileLook): boolean {
  if (isEmpty(found) || isStoppedFirstStart(found)) return true;
  const { tables, migrations } = found;
  if (!tables.has(MIGRATIONS_TABLE)) return false;
  // Its tables and a migrations table: the migrations judge what that table records.
  if (PALISADE_TABLES.every((name) => tables.has(name))) return true;
  // A migrations table that records one of Palisade's (the schema guard judges the tables).
  return migrations.some((createdAt) => MIGRATION_TAG_BY_MILLIS.has(Number(createdAt)));
}

function markedByAnApplication(found: FileLook): boolean {
  return found.applicationId !== 0 || found.userVersion !== 0;
}

/** The schema Palisade's migrator leaves before its first transaction, with SQLite's autoindex. */
function stoppedFirstStartSchema(): SchemaEntry[] {
  const memory = new Database(":memory:");
  try {
    memory.run(MIGRATIONS_TABLE_DDL);
    return readSchema(memory);
  } finally {
    memory.close();
  }
}
