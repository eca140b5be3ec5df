/** Databases as a previous release left them: the committed migrations up to one of them. */
import type { Database } from "bun:sqlite";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MIGRATIONS_FOLDER } from "../../src/db/migrate";

/** A copy of the migrations folder (in `dir`) whose journal ends at migration `lastIdx`. */
export function migrationsUpTo(dir: string, lastIdx: number): string {
  const folder = join(dir, `drizzle-${String(lastIdx).padStart(4, "0")}`);
  cpSync(MIGRATIONS_FOLDER, folder, { recursive: true });
  const journalPath = join(folder, "meta", "_journal.json");
  const journal = JSON.parse(readFileSync(journalPath, "utf8"));
  journal.entries = journal.entries.filter((entry: { idx: number }) => entry.idx <= lastIdx);
  writeFileSync(journalPath, JSON.stringify(journal));
  return folder;
}

function journalEntries(): { idx: number; tag: string; when: number }[] {
  return JSON.parse(readFileSync(join(MIGRATIONS_FOLDER, "meta", "_journal.json"), "utf8")).entries;
}

/** The tags of every committed migration from `firstIdx` on: what a database stopped before it applies. */
export function migrationTagsFrom(firstIdx: number): string[] {
  return journalEntries()
    .filter((entry) => entry.idx >= firstIdx)
    .map((entry) => entry.tag);
}

/**
 * Forgets, in a database's migrations table, migration `firstIdx` and every one after it (as a
 * file put back into an older shape would read): the next migrate applies them again.
 */
export function forgetMigrationsFrom(sqlite: Database, firstIdx: number): void {
  const first = journalEntries().find((entry) => entry.idx === firstIdx)!;
  sqlite.run("DELETE FROM __drizzle_migrations WHERE created_at >= ?", [first.when]);
}

/**
 * Puts a database back into its shape before migration `firstIdx`, as someone with the file could:
 * the columns that migration and every later one added (`ALTER TABLE … ADD …`) and the tables they
 * created dropped, their indexes too, and the migrations forgotten, so the next migrate applies them
 * again (and its companions run again).
 */
export function putBackBefore(sqlite: Database, firstIdx: number): void {
  const texts = journalEntries()
    .filter((each) => each.idx >= firstIdx)
    .map((entry) => readFileSync(join(MIGRATIONS_FOLDER, `${entry.tag}.sql`), "utf8"));
  const columns = (pattern: RegExp) =>
    texts.flatMap((text) =>
      [...text.matchAll(pattern)].map(([, table, column]) => `${table}.${column}`),
    );
  const added = columns(/ALTER TABLE `(\w+)` ADD `(\w+)`/g);
  const dropped = new Set(columns(/ALTER TABLE `(\w+)` DROP COLUMN `(\w+)`/g));
  for (const column of dropped) {
    // Dropped from a shape older than `firstIdx`: its definition is not here to put back.
    if (!added.includes(column)) throw new Error(`cannot put back ${column}`);
  }
  // Indexes first: a column an index names cannot be dropped.
  for (const text of texts) {
    for (const [, index] of text.matchAll(/CREATE (?:UNIQUE )?INDEX `(\w+)`/g)) {
      sqlite.run(`DROP INDEX IF EXISTS "${index}"`);
    }
  }
  // A column added and dropped again within these migrations is already gone.
  for (const column of added.filter((each) => !dropped.has(each))) {
    const [table, name] = column.split(".");
    sqlite.run(`ALTER TABLE "${table}" DROP COLUMN "${name}"`);
  }
  for (const text of texts) {
    for (const [, table] of text.matchAll(/CREATE TABLE `(\w+)`/g)) {
      sqlite.run(`DROP TABLE IF EXISTS "${table}"`);
    }
  }
  forgetMigrationsFrom(sqlite, firstIdx);
}
