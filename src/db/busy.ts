/**
 * @module
 * The database under another connection's write lock.
 *
 * bun:sqlite is synchronous: while SQLite waits out its busy timeout the whole process waits with
 * it, health checks included. So the serving process waits at most REQUEST_BUSY_TIMEOUT_MS per
 * statement (start-up and the CLI keep the long wait: they serve nobody). What must be written
 * is retried later from a timer, the event loop running in between: the limiter for a bounded
 * total (then it fails open or closed by policy), the audit queue until the lock goes. A request
 * whose own write meets the lock answers 503 SERVICE_UNAVAILABLE with `Retry-After` (the error
 * handler recognises isDatabaseBusy); nothing answers 500 for a lock.
 */
import type { Database } from "bun:sqlite";
import { firstLine } from "../error-line";

/** The longest one statement of the serving process waits for another's write lock. */
export const REQUEST_BUSY_TIMEOUT_MS = 50;

/** SQLITE_BUSY or SQLITE_LOCKED (and their extended codes): another connection holds the lock. */
export function isDatabaseBusy(error: unknown): boolean {
  const code = sqliteCodeOf(error);
  return code !== null && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"));
}

/**
 * The SQLite result code of an error, or of the error it wraps: Drizzle rethrows the driver's
 * error as is from its query builder, but wraps it (as `cause`) in a DrizzleError from
 * `db.run(sql)` and savepoints. Null when neither carries one.
 */
export function sqliteCodeOf(error: unknown): string | null {
  for (let depth = 0; depth < 4 && error instanceof Error; depth++) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("SQLITE_")) return code;
    error = error.cause;
  }
  return null;
}

/** The connection's busy timeout now, in ms. */
export function busyTimeoutOf(sqlite: Database): number {
  const row = sqlite.query("PRAGMA busy_timeout").values()[0];
  return Number(row?.[0] ?? 0);
}

export function setBusyTimeout(sqlite: Database, ms: number): void {
  sqlite.run(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(ms))}`);
}

/**
 * Whether this connection could write now: takes the write lock (waiting the connection's busy
 * timeout at most), writes, and rolls the write back. Throws, saying why, when it cannot. The lock
 * alone proves nothing about a file this process may only read: SQLite opens it read-only without
 * a word, and still takes the lock (it can create the `-wal` and `-shm` files beside it); only a
 * write fails there.
 */
export function probeWritable(sqlite: Database): void {
  const notWritable = (error: unknown) =>
    new Error(`not writable: ${firstLine(error)}`, { cause: error });
  try {
    sqlite.run("BEGIN IMMEDIATE");
  } catch (error) {
    throw notWritable(error);
  }
  try {
    // The header's user_version, set to what it is: a write of one page that nothing reads.
    const version = Number(sqlite.query("PRAGMA user_version").values()[0]?.[0] ?? 0);
    sqlite.run(`PRAGMA user_version = ${version}`);
  } catch (error) {
    throw notWritable(error);
  } finally {
    sqlite.run("ROLLBACK");
  }
}
