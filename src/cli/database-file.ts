/**
 * @module
 * What a command checks of DATABASE_PATH before anything is made or written. One that reads the
 * database: that the path names a file, and that the file is Palisade's. A mistyped path, an empty
 * file (a 0-byte `-wal` named by mistake) or another application's database would otherwise read as
 * an empty deployment ("no accounts") — and opening it as the service does would write to it (WAL
 * mode, Palisade's tables), and in development make an audit key beside it. One that makes the
 * database: that the file, if there is one, is empty or Palisade's (db/foreign-database.ts). The
 * look is read-only.
 */
import { existsSync, statSync } from "node:fs";
import { BUSY_TIMEOUT_MS, refuseForeignDatabase } from "../db/client";
import { type FileLook, lookAt, MIGRATIONS_TABLE } from "../db/file-look";
import {
  isEmpty,
  isStoppedFirstStart,
  notSqlite,
  PALISADE_TABLES,
  whatOthersHold,
} from "../db/foreign-database";
import { CliError } from "./command";

/** For a command that makes the database: refuses a file that holds another's (exit 1). */
export function checkMakeableDatabaseFile(path: string): void {
  refuseForeignDatabase(path);
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

export function checkDatabaseFile(path: string, commandName: string): void {
  if (!existsSync(path)) {
    throw new CliError(
      `DATABASE_PATH ${path} names no file: ${commandName} reads an existing database and makes none (check the path)`,
    );
  }
  // Before the configuration makes a development audit key beside it (probe 45a F4).
  if (notSqlite(path)) {
    throw new CliError(
      `DATABASE_PATH ${path} is not a usable SQLite database: it does not start as one; ${commandName} reads an existing database and writes nothing there (check the path)`,
    );
  }
  let found: FileLook | null;
  try {
    found = lookAt(path, BUSY_TIMEOUT_MS);
  } catch {
    throw new CliError(`DATABASE_PATH ${path} is locked by another writer; try again`);
  }
  // Not SQLite at all: opening it says so, in the words the service uses.
  if (found === null) return;
  const { tables } = found;
  const palisade = PALISADE_TABLES.every((name) => tables.has(name));
  if (palisade && tables.has(MIGRATIONS_TABLE)) return;
  if (palisade) {
    throw new CliError(
      `DATABASE_PATH ${path} holds Palisade's tables but no record of its migrations: the file was altered; restore it from a backup`,
    );
  }
  // Palisade's own, which the commands that make a database finish (probe 44b F4: it was called
  // another application's).
  if (isStoppedFirstStart(found)) {
    throw new CliError(
      `DATABASE_PATH ${path} is a Palisade database whose first start stopped before its migrations were done: ${commandName} reads a migrated one and writes nothing there (start the service or run db:migrate)`,
    );
  }
  throw new CliError(
    `DATABASE_PATH ${path} holds no Palisade database (${isEmpty(found) ? "empty" : whatOthersHold(found)}): ${commandName} reads an existing one and writes nothing there (check the path)`,
  );
}
