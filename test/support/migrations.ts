/** Databases as a previous release left them: the committed migrations up to one of them. */
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
