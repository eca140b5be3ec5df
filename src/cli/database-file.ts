/**
 * @module
 * What a command that reads the database checks before anything is made or written: that
 * DATABASE_PATH names a file, and that the file is Palisade's. A mistyped path, an empty file (a
 * 0-byte `-wal` named by mistake) or another application's database would otherwise read as an
 * empty deployment ("no accounts") — and opening it as the service does would write to it (WAL
 * mode, Palisade's tables), and in development make an audit key beside it. The look is read-only.
 * A command that makes the database asks db/client's refuseForeignDatabase instead.
 */
import { existsSync } from "node:fs";
import { BUSY_TIMEOUT_MS } from "../db/client";
import { type FileLook, lookAt, MIGRATIONS_TABLE } from "../db/file-look";
import {
  isEmpty,
  isStoppedFirstStart,
  NOT_SQLITE,
  notAFile,
  notAFileReason,
  notSqlite,
  PALISADE_ALTERED,
  PALISADE_TABLES,
  whatOthersHold,
} from "../db/foreign-database";
import { CliError } from "./command";

export function checkDatabaseFile(path: string, commandName: string): void {
  if (!existsSync(path)) {
    throw new CliError(
      `DATABASE_PATH ${path} names no file: ${commandName} reads an existing database and makes none (check the path)`,
    );
  }
  const kind = notAFile(path);
  if (kind !== null) throw new CliError(`DATABASE_PATH ${path} ${notAFileReason(kind)}`);
  // Before the configuration makes a development audit key beside it (probe 45a F4).
  if (notSqlite(path)) {
    throw new CliError(
      `DATABASE_PATH ${path} ${NOT_SQLITE}; ${commandName} reads an existing database and writes nothing there (check the path)`,
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
    throw new CliError(`DATABASE_PATH ${path} ${PALISADE_ALTERED}`);
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
