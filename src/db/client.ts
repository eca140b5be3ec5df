/**
 * @module
 * Opens the SQLite database with the pragmas every process sharing the file must agree on:
 * WAL so readers never block the writer, synchronous=NORMAL (durable at each checkpoint, safe
 * against corruption) with a checkpoint every 16 MB of WAL, a busy timeout so concurrent writers wait instead of failing, foreign keys,
 * and secure_delete so what a statement deletes or overwrites is zeroed, not left in free space.
 * The 5 s timeout is for start-up (probe, migrations) and the CLI; a serving process lowers it to
 * REQUEST_BUSY_TIMEOUT_MS once migrated (see db/busy), since every wait blocks its event loop.
 */
import { Database, SQLiteError } from "bun:sqlite";
import {
  accessSync,
  closeSync,
  existsSync,
  constants as fsConstants,
  mkdirSync,
  openSync,
  statSync,
} from "node:fs";
import { dirname } from "node:path";
import { getTableName, is } from "drizzle-orm";
import { type BunSQLiteDatabase, drizzle } from "drizzle-orm/bun-sqlite";
import { SQLiteTable } from "drizzle-orm/sqlite-core";
import { firstLine } from "../error-line";
import { isDatabaseBusy, probeWritable } from "./busy";
import { fullFilesystem } from "./disk-space";
import { whyNotPalisades } from "./foreign-database";
import * as schema from "./schema";
import { timeQueries } from "./timing";

export type AppDatabase = BunSQLiteDatabase<typeof schema> & { $client: Database };

export const BUSY_TIMEOUT_MS = 5000;
/** WAL pages (4 KB each) between automatic checkpoints: 16 MB. */
export const WAL_CHECKPOINT_PAGES = 4000;
/** What a reset WAL file is truncated back to. */
export const WAL_LIMIT_BYTES = 32 * 1024 * 1024;
/** `ON`: freed cells and freelist pages are zeroed (FAST would leave freelist pages as they were). */
export const SECURE_DELETE = "ON";

/** A database that cannot be used, described for the operator in one line. */
export class DatabaseOpenError extends Error {
  constructor(path: string, reason: string) {
    super(`DATABASE_PATH ${path} ${reason}`);
    this.name = "DatabaseOpenError";
  }
}

/**
 * A step of a start that takes a lock. Processes starting together on a new file (still in
 * rollback-journal mode until the first switches it to WAL): SQLite reports a lock at once,
 * without waiting its busy timeout, where waiting could deadlock two connections, so the start
 * waits and tries again, as long as a busy timeout, before it gives up.
 */
function waitingOutLocks(sqlite: Database, step: (sqlite: Database) => void) {
  const deadline = Date.now() + BUSY_TIMEOUT_MS;
  for (;;) {
    try {
      step(sqlite);
      return;
    } catch (error) {
      if (!isDatabaseBusy(error) || Date.now() > deadline) throw error;
      Bun.sleepSync(20);
    }
  }
}

/**
 * Creates an empty file readable by its owner only (0600; a umask can only take bits away), or
 * throws (EEXIST when there is one): a database or a copy of one holds password and key hashes
 * and the audit log, and SQLite would create it as the umask says (0644 under the usual 022).
 */
export function createOwnerOnly(path: string): void {
  closeSync(openSync(path, "wx", 0o600));
}

/**
 * A new database file is created 0600 (createOwnerOnly); its `-wal` and `-shm` take the file's
 * mode. An existing file is left as it is.
 */
function createPrivately(path: string): void {
  try {
    createOwnerOnly(path);
  } catch (error) {
    // It exists (made before, or by another process a moment ago), or cannot be made here: then
    // SQLite's open says why. Or the path is a symbolic link to a file not made yet (a database
    // put on another disk, linked before its first start): made there, as privately (probe 83e:
    // SQLite made it 0644).
    if ((error as NodeJS.ErrnoException).code === "EEXIST" && !existsSync(path)) {
      try {
        closeSync(openSync(path, "a", 0o600));
      } catch {
        // SQLite's open says why.
      }
    }
  }
}

/**
 * Why an opened file cannot serve, in the words that fit: the service and every command write to
 * it (migrations, the audit log), so a read-only file or one another process holds locked is named
 * as such, not as a damaged database.
 */
export function whyUnusable(error: unknown, path?: string): string {
  const code =
    (error as { code?: unknown; cause?: { code?: unknown } }).cause?.code ??
    (error as { code?: unknown }).code;
  const sqliteCode = typeof code === "string" ? code : "";
  // SQLite opens a file it may not write read-only without a word; what fails then is a write
  // (SQLITE_READONLY), or making the `-wal` beside it: SQLITE_READONLY_DIRECTORY for EACCES, but
  // only "unable to open database file" (SQLITE_CANTOPEN) for a read-only mount's EROFS or an
  // immutable file's EPERM. The system says which of the file and its directory cannot be
  // written (probe 43c F4).
  if (path !== undefined && /^SQLITE_(READONLY|CANTOPEN)/.test(sqliteCode)) {
    const file = writeRefusal(path);
    if (file !== null) {
      return `is read-only (${firstLine(error)}; writing it: ${file}): ${READ_ONLY_ADVICE}`;
    }
    const directory = writeRefusal(dirname(path));
    if (directory !== null) {
      return `is in a directory that cannot be written (${firstLine(error)}; writing ${dirname(path)}: ${directory}): SQLite makes its -wal and -shm beside the file; make the directory writable, or use a copy in one that is`;
    }
  }
  if (sqliteCode.startsWith("SQLITE_READONLY")) {
    return `is read-only (${firstLine(error)}): ${READ_ONLY_ADVICE}`;
  }
  if (isDatabaseBusy(error) || isDatabaseBusy((error as { cause?: unknown }).cause)) {
    return `is locked by another connection (${firstLine(error)}): try again when it is done`;
  }
  const full = path === undefined ? null : fullFilesystem(sqliteCode, dirname(path));
  if (full !== null) {
    return `cannot be written: ${full} (${firstLine(error)}): free space there and start again; a full disk is no sign the file is damaged`;
  }
  return `is not a usable SQLite database: ${firstLine(error)}`;
}

const READ_ONLY_ADVICE = "Palisade and its commands write to it; use a writable copy";

/**
 * Why `path` cannot be written, as the system says it (EROFS: read-only storage; EACCES: its mode;
 * EPERM: an immutable file), or null when it can, or when it cannot be told.
 */
export function writeRefusal(path: string): string | null {
  try {
    accessSync(path, fsConstants.W_OK);
    return null;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === "EROFS" || code === "EACCES" || code === "EPERM" ? code : null;
  }
}

/** The permission bits of the database file; null for `:memory:` or a file that cannot be read. */
export function databaseFileMode(path: string): number | null {
  if (path === ":memory:") return null;
  try {
    return statSync(path).mode & 0o777;
  } catch {
    return null;
  }
}

/**
 * Refuses, before anything is written, a file that holds tables and is not Palisade's database
 * (db/foreign-database.ts): every process that opens the file to write it — the start, a command —
 * comes through here, and the start and the commands that make a database ask first themselves,
 * before their configuration makes a development audit key beside the file.
 */
export function refuseForeignDatabase(path: string): void {
  if (path === ":memory:") return;
  let why: string | null;
  try {
    why = whyNotPalisades(path, BUSY_TIMEOUT_MS);
  } catch (error) {
    throw new DatabaseOpenError(path, whyUnusable(error, path));
  }
  if (why !== null) throw new DatabaseOpenError(path, why);
}

export function openDatabase(path: string): AppDatabase {
  refuseForeignDatabase(path);
  // Said before SQLite opens it: SQLite opens a file it may not write read-only and makes its
  // `-wal` and `-shm` beside it when the directory allows, leaving them there when the probe
  // write below then fails (probe 45a F5).
  const unwritable = path === ":memory:" || !existsSync(path) ? null : writeRefusal(path);
  if (unwritable !== null) {
    throw new DatabaseOpenError(
      path,
      `is read-only (writing it: ${unwritable}): ${READ_ONLY_ADVICE}`,
    );
  }
  let sqlite: Database;
  try {
    if (path !== ":memory:") {
      mkdirSync(dirname(path), { recursive: true });
      createPrivately(path);
    }
    sqlite = new Database(path, { create: true, strict: true });
  } catch (error) {
    throw new DatabaseOpenError(path, `cannot be opened: ${firstLine(error)}`);
  }
  try {
    // First: switching to WAL takes a lock too, and several processes starting together on a new
    // file must wait for each other there, not fail.
    sqlite.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    waitingOutLocks(sqlite, (db) => db.run("PRAGMA journal_mode = WAL"));
    sqlite.run("PRAGMA synchronous = NORMAL");
    // A checkpoint every 16 MB of WAL rather than SQLite's 4 MB: a flood of new clients writes a
    // limiter row on a random page per request, and checkpoints (with their fsync) were a third of
    // each insert's cost (measured: 65 → 44 µs an insert at 16 a transaction). The file is cut back
    // to WAL_LIMIT_BYTES after a checkpoint that ran long behind a reader.
    sqlite.run(`PRAGMA wal_autocheckpoint = ${WAL_CHECKPOINT_PAGES}`);
    sqlite.run(`PRAGMA journal_size_limit = ${WAL_LIMIT_BYTES}`);
    sqlite.run("PRAGMA foreign_keys = ON");
    // Deleted and overwritten content (a cleared WhatsApp number, an erased user, a deleted
    // conversation) is zeroed in the file instead of lingering in free space; see the README.
    sqlite.run(`PRAGMA secure_delete = ${SECURE_DELETE}`);
    // A probe write: a read-only file or directory fails here, at start, not on the first request.
    waitingOutLocks(sqlite, probeWritable);
  } catch (error) {
    sqlite.close();
    throw new DatabaseOpenError(path, whyUnusable(error, path));
  }
  // Every statement from here on is timed (db_query_duration_seconds; see db/timing).
  timeQueries(sqlite, SCHEMA_TABLES);
  return drizzleOf(sqlite);
}

/** The schema's table names: the only values a query's `table` label may take. */
const SCHEMA_TABLES: readonly string[] = Object.values(schema)
  .filter((value) => is(value, SQLiteTable))
  .map((table) => getTableName(table as SQLiteTable));

const databases = new WeakMap<Database, AppDatabase>();

/**
 * The Drizzle database over a bun:sqlite connection: the one openDatabase made for it, or one made
 * now and kept with the connection. For the services that are handed the raw connection.
 */
export function drizzleOf(sqlite: Database): AppDatabase {
  let db = databases.get(sqlite);
  if (db === undefined) {
    db = drizzle({ client: sqlite, schema }) as AppDatabase;
    databases.set(sqlite, db);
  }
  return db;
}

/**
 * SQLite's primary result codes that mean the store cannot be used right now, rather than that
 * the statement was wrong: locked past the busy timeout, read-only, full, an I/O error.
 */
const UNAVAILABLE_CODES = [
  "SQLITE_BUSY",
  "SQLITE_LOCKED",
  "SQLITE_READONLY",
  "SQLITE_FULL",
  "SQLITE_IOERR",
  "SQLITE_CANTOPEN",
  "SQLITE_PROTOCOL",
] as const;

/** Whether an error is the database being unavailable (answered 503), not a bug (500). */
export function isStoreUnavailable(error: unknown): boolean {
  // Drizzle rethrows the driver's error as is from its query builder, but wraps it (as `cause`)
  // in a DrizzleError from `db.run(sql)` and savepoints: both are the same failure.
  const sqliteError = sqliteErrorIn(error);
  if (sqliteError === null) return false;
  const code = String(sqliteError.code ?? "");
  // Extended codes (SQLITE_BUSY_SNAPSHOT, SQLITE_IOERR_WRITE, …) share their primary's prefix.
  return UNAVAILABLE_CODES.some((primary) => code === primary || code.startsWith(`${primary}_`));
}

/**
 * The SQLite error code behind an error (SQLITE_FULL, SQLITE_READONLY, …), through a wrapper, or
 * null. Never the message: a DrizzleError's names the query's parameters, client text among them.
 */
export function sqliteCodeOf(error: unknown): string | null {
  const sqliteError = sqliteErrorIn(error);
  return sqliteError === null ? null : String(sqliteError.code ?? "SQLITE_ERROR");
}

/** The SQLiteError itself, or the one a wrapper (a DrizzleError) carries as its cause. */
function sqliteErrorIn(error: unknown): SQLiteError | null {
  for (let depth = 0; depth < 4 && error instanceof Error; depth++) {
    if (error instanceof SQLiteError) return error;
    error = error.cause;
  }
  return null;
}
