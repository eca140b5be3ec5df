/**
 * @module
 * A look at a database file that writes nothing: no table, no journal mode, no `-wal` or `-shm`
 * left beside it where that can be avoided. What a command or a start checks before it opens the
 * file as the service does (which writes at once: WAL mode, then the migrations).
 */
import { constants, Database } from "bun:sqlite";
import { existsSync, statSync } from "node:fs";
import { isDatabaseBusy } from "./busy";

/** The table drizzle records its migrations in; Palisade's file has one from its first start. */
export const MIGRATIONS_TABLE = "__drizzle_migrations";

/**
 * A read-only connection that leaves nothing beside the file. Opening a WAL-mode file, even
 * read-only, makes its `-shm` (and an empty `-wal`), which a read-only connection cannot remove when
 * it closes: a refused look would leave two new files beside another application's database. With no
 * `-wal` or `-journal` beside it the file holds all its content, so it is read as `immutable`
 * (no locks, no side files); otherwise as any reader does, through the WAL or journal there (a
 * running service's file, or a crashed one's, whose tables may be only in its WAL).
 */
export function openForALook(path: string): Database {
  if (!atRest(path)) return new Database(path, { readonly: true });
  const uriPath = path.split("/").map(encodeURIComponent).join("/");
  return new Database(
    `file:${uriPath}?immutable=1`,
    constants.SQLITE_OPEN_READONLY | constants.SQLITE_OPEN_URI,
  );
}

/** No `-wal` or `-journal` beside it: the file holds all its content, and no writer has it open. */
export function atRest(path: string): boolean {
  return !existsSync(`${path}-wal`) && !existsSync(`${path}-journal`);
}

/**
 * What changes when a file is written: its inode, size, and modification and change times (the
 * change time too: a writer can set the modification time back, `touch -r`, `cp -p`, probe 31e F4;
 * the kernel sets the change time itself). A look at a file at rest takes no lock, so it compares
 * this before and after.
 */
export function fileIdentity(path: string): string {
  const stat = statSync(path);
  return `${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`;
}

/** An entry of a file's schema (`sqlite_master`), as SQLite keeps it. */
export interface SchemaEntry {
  type: string;
  name: string;
  table: string;
  sql: string | null;
}

/** What a look finds in a file. */
export interface FileLook {
  /** Every entry of its schema, SQLite's own too (autoindexes, `sqlite_sequence`), by name. */
  schema: readonly SchemaEntry[];
  /** Its tables, SQLite's own (`sqlite_sequence`, `sqlite_stat1`…) left out. */
  tables: ReadonlySet<string>;
  /** The `created_at` of each row of its migrations table (none without one, or one without it). */
  migrations: readonly unknown[];
  /** The header's `application_id` and `user_version`: 0 until an application sets them. */
  applicationId: number;
  userVersion: number;
}

/** Every entry of a connection's schema (`sqlite_master`), by name. */
export function readSchema(sqlite: Database): SchemaEntry[] {
  return sqlite
    .query<SchemaEntry, []>(
      `SELECT type, name, tbl_name AS "table", sql FROM sqlite_master ORDER BY type, name`,
    )
    .all();
}

/**
 * What the file at `path` holds, read-only; null when it is not an SQLite database (opening it as
 * the service does says so in its own words). Throws SQLite's error when another connection holds
 * it locked past `busyTimeoutMs`.
 */
export function lookAt(path: string, busyTimeoutMs: number): FileLook | null {
  return withALook(path, busyTimeoutMs, (look) => {
    const schema = readSchema(look);
    const tables = new Set(
      schema
        .filter((entry) => entry.type === "table" && !entry.name.startsWith("sqlite_"))
        .map((entry) => entry.name),
    );
    const header = (pragma: string) => Number(look.query(`PRAGMA ${pragma}`).values()[0]?.[0] ?? 0);
    return {
      schema,
      tables,
      migrations: tables.has(MIGRATIONS_TABLE) ? migrationTimes(look) : [],
      applicationId: header("application_id"),
      userVersion: header("user_version"),
    };
  });
}

/**
 * `read` of the file at `path` opened for a look, closed after; null when it cannot be opened or
 * read (not SQLite, or not what `read` expects). SQLite's error when it is locked past
 * `busyTimeoutMs`. The wait matters even beside a live service in WAL mode, whose readers are never
 * blocked by its writes: the last connection to close a file takes it exclusively while it
 * checkpoints and removes the WAL, and a look meeting that without a wait failed at once.
 *
 * A locked file is tried again every LOOK_RETRY_MS, opened afresh each time, rather than waited for
 * on one connection (SQLite's busy timeout): that connection was opened for a file with a WAL
 * beside it, and once the holder had closed it and removed its WAL, it read the file through a new
 * `-shm` and `-wal` it could not remove (probe 97b F1: left beside another application's database
 * it then refused). Tried again, a file the holder left at rest is read as `immutable`.
 */
export function withALook<T>(
  path: string,
  busyTimeoutMs: number,
  read: (look: Database) => T,
): T | null {
  const deadline = Date.now() + busyTimeoutMs;
  for (;;) {
    let look: Database;
    try {
      look = openForALook(path);
    } catch {
      return null;
    }
    try {
      look.run("PRAGMA busy_timeout = 0");
      return read(look);
    } catch (error) {
      if (!isDatabaseBusy(error)) return null;
      if (Date.now() >= deadline) throw error;
    } finally {
      look.close();
    }
    Bun.sleepSync(LOOK_RETRY_MS);
  }
}

/** How long a look waits before it tries a locked file again. */
export const LOOK_RETRY_MS = 20;

/**
 * The `created_at` of each row of the migrations table; none when it has no such column (another
 * application's table of that name, which the schema then tells from Palisade's).
 */
function migrationTimes(look: Database): unknown[] {
  try {
    return look
      .query(`SELECT created_at FROM "${MIGRATIONS_TABLE}"`)
      .values()
      .map((row) => row[0]);
  } catch (error) {
    if (isDatabaseBusy(error)) throw error;
    return [];
  }
}
