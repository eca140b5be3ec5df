/**
 * SQLite files that are not Palisade's though they hold no table of another application's, and the
 * one file on its way to being Palisade's: what a first start stopped before its migrations leaves
 * (probe 44b F2, F3, F4).
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { openDatabase } from "../../src/db/client";
import { MIGRATIONS_TABLE_DDL } from "../../src/db/migrate";

/** A file someone else made, and what the line that refuses it says it holds. */
export interface OthersFile {
  name: string;
  holds: string;
  statements: readonly string[];
}

export const OTHERS_FILES: readonly OthersFile[] = [
  {
    // Views only, with the header marks another application sets (probe 44b F2).
    name: "views.db",
    holds: "another application's views",
    statements: [
      "PRAGMA application_id = 1234",
      "PRAGMA user_version = 7",
      "CREATE VIEW open_orders AS SELECT 1 AS id, 'widget' AS item",
    ],
  },
  {
    name: "view-and-trigger.db",
    holds: "another application's triggers and views",
    statements: [
      "CREATE VIEW inbox AS SELECT 1 AS id",
      "CREATE TRIGGER inbox_write INSTEAD OF INSERT ON inbox BEGIN SELECT 1; END",
    ],
  },
  {
    name: "application-id.db",
    holds: "another application's mark: application_id 1234, user_version 0",
    statements: ["PRAGMA application_id = 1234"],
  },
  {
    name: "user-version.db",
    holds: "another application's mark: application_id 0, user_version 3",
    statements: ["PRAGMA user_version = 3"],
  },
  {
    // drizzle's table in one line, as written by hand (probe 44b F3).
    name: "migrations-one-line.db",
    holds: "another application's tables",
    statements: [
      "CREATE TABLE __drizzle_migrations (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)",
    ],
  },
  {
    name: "migrations-other-columns.db",
    holds: "another application's tables",
    statements: [
      "CREATE TABLE __drizzle_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, hash text NOT NULL, created_at numeric, name text)",
    ],
  },
  {
    name: "migrations-no-created-at.db",
    holds: "another application's tables",
    statements: ["CREATE TABLE __drizzle_migrations (version TEXT)"],
  },
  {
    // Palisade's migrations table to the character, and something else beside it.
    name: "migrations-and-a-view.db",
    holds: "another application's tables",
    statements: [MIGRATIONS_TABLE_DDL, "CREATE VIEW pending AS SELECT 1 AS id"],
  },
  {
    name: "migrations-and-a-mark.db",
    holds: "another application's tables",
    statements: [MIGRATIONS_TABLE_DDL, "PRAGMA user_version = 1"],
  },
];

/** Writes each of OTHERS_FILES into `dir`; returns their paths, in order. */
export function makeOthersFiles(dir: string): string[] {
  return OTHERS_FILES.map(({ name, statements }) => {
    const path = join(dir, name);
    const file = new Database(path);
    for (const statement of statements) file.run(statement);
    file.close();
    return path;
  });
}

/**
 * What a first start stopped between making drizzle's migrations table and the transaction that
 * fills it leaves at `path`: a WAL-mode file holding that table alone, empty (db/migrate.ts).
 */
export function makeStoppedFirstStart(path: string): void {
  const db = openDatabase(path);
  db.$client.run(MIGRATIONS_TABLE_DDL);
  db.$client.close();
}

/**
 * Another application's file in WAL mode, at a path a URI would misread: a look that opened it as
 * SQLite does would leave a `-shm` and an empty `-wal` beside it. Its path.
 */
export function makeOthersWalFile(dir: string): string {
  const path = join(dir, "other app?#%41.db");
  const other = new Database(path);
  other.run("PRAGMA journal_mode = WAL");
  other.run("CREATE TABLE notes (body TEXT)");
  other.close();
  return path;
}
