/**
 * @module
 * What a command that reads the database checks before anything is made or written: that
 * DATABASE_PATH names a file, and that the file is Palisade's. A mistyped path, an empty file (a
 * 0-byte `-wal` named by mistake) or another application's database would otherwise read as an
 * empty deployment ("no accounts") — and opening it as the service does would write to it (WAL
 * mode, Palisade's tables), and in development make an audit key beside it. The look is read-only.
 */
import { constants, Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { isDatabaseBusy } from "../db/busy";
import { BUSY_TIMEOUT_MS } from "../db/client";
import { CliError } from "./command";

/** Tables every Palisade database has from its first migration on, and no other application's. */
const PALISADE_TABLES = ["audit_events", "rate_limit_counters", "users"] as const;
const MIGRATIONS_TABLE = "__drizzle_migrations";

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

export function checkDatabaseFile(path: string, commandName: string): void {
  if (!existsSync(path)) {
    throw new CliError(
      `DATABASE_PATH ${path} names no file: ${commandName} reads an existing database and makes none (check the path)`,
    );
  }
  let tables: Set<string>;
  try {
    const look = openForALook(path);
    try {
      look.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const names = look
        .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'")
        .all();
      tables = new Set(names.map((row) => row.name));
    } finally {
      look.close();
    }
  } catch (error) {
    if (isDatabaseBusy(error)) {
      throw new CliError(`DATABASE_PATH ${path} is locked by another writer; try again`);
    }
    // Not SQLite at all: opening it says so, in the words the service uses.
    return;
  }
  const palisade = PALISADE_TABLES.every((name) => tables.has(name));
  if (palisade && tables.has(MIGRATIONS_TABLE)) return;
  if (palisade) {
    throw new CliError(
      `DATABASE_PATH ${path} holds Palisade's tables but no record of its migrations: the file was altered; restore it from a backup`,
    );
  }
  throw new CliError(
    `DATABASE_PATH ${path} holds no Palisade database (${tables.size === 0 ? "empty" : "another application's tables"}): ${commandName} reads an existing one and writes nothing there (check the path)`,
  );
}
