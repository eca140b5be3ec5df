/**
 * The migrations a start applies are embedded in the code (so a bundle carries them): they must be
 * exactly the committed folder's, and applying them must leave the same database as drizzle's own
 * folder migrator.
 */
import { afterEach, expect, test } from "bun:test";
import { cpSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readMigrationFiles } from "drizzle-orm/migrator";
import { openDatabase } from "../../src/db/client";
import { applyMigrations, MIGRATIONS_FOLDER } from "../../src/db/migrate";
import { embeddedMigrations, LATEST_MIGRATION_MILLIS } from "../../src/db/migrations";
import { tempDir } from "../support/app";

const dirs: { remove(): void }[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) dir.remove();
});

function freshDatabase() {
  const dir = tempDir();
  dirs.push(dir);
  return { dir: dir.path, db: openDatabase(join(dir.path, "palisade.db")) };
}

const schemaOf = (db: ReturnType<typeof openDatabase>) =>
  db.$client
    .query("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
    .all();
const appliedOf = (db: ReturnType<typeof openDatabase>) =>
  db.$client.query("SELECT id, hash, created_at FROM __drizzle_migrations ORDER BY id").all();

test("the embedded migrations are the folder's: every .sql file, same statements, hashes and times", () => {
  const embedded = embeddedMigrations();
  expect(embedded).toEqual(readMigrationFiles({ migrationsFolder: MIGRATIONS_FOLDER }));
  const files = readdirSync(MIGRATIONS_FOLDER).filter((name) => name.endsWith(".sql"));
  expect(embedded.length).toBe(files.length);
  expect(LATEST_MIGRATION_MILLIS).toBe(embedded.at(-1)!.folderMillis);
});

test("a database migrated from the embedded list is the one the folder gives, and a second run changes nothing", () => {
  const embedded = freshDatabase();
  applyMigrations(embedded.db);
  const folder = freshDatabase();
  applyMigrations(folder.db, MIGRATIONS_FOLDER);
  expect(schemaOf(embedded.db)).toEqual(schemaOf(folder.db));
  expect(appliedOf(embedded.db)).toEqual(appliedOf(folder.db));
  expect(appliedOf(embedded.db).length).toBe(embeddedMigrations().length);

  applyMigrations(embedded.db);
  expect(appliedOf(embedded.db)).toEqual(appliedOf(folder.db));
  embedded.db.$client.close();
  folder.db.$client.close();
});

test("a database an older release migrated gets only the migrations it lacks", () => {
  const { dir, db } = freshDatabase();
  const older = join(dir, "drizzle-older");
  cpSync(MIGRATIONS_FOLDER, older, { recursive: true });
  const journalPath = join(older, "meta", "_journal.json");
  const journal = JSON.parse(readFileSync(journalPath, "utf8"));
  journal.entries = journal.entries.slice(0, -2);
  writeFileSync(journalPath, JSON.stringify(journal));
  applyMigrations(db, older);
  const before = appliedOf(db);
  expect(before.length).toBe(embeddedMigrations().length - 2);

  applyMigrations(db);
  const after = appliedOf(db);
  expect(after.slice(0, before.length)).toEqual(before);
  expect(after.length).toBe(embeddedMigrations().length);
  // The last migration's column exists: its statements ran, not only its bookkeeping row.
  const columns = db.$client.query("PRAGMA table_info(rate_limit_counters)").all() as {
    name: string;
  }[];
  expect(columns.map((column) => column.name)).toContain("prune_after");
  db.$client.close();
});

test("a database whose migrations table exists but is empty (a first start cut short) is migrated in full", () => {
  const { db } = freshDatabase();
  db.$client.run(
    'CREATE TABLE "__drizzle_migrations" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)',
  );
  applyMigrations(db);
  expect(appliedOf(db).length).toBe(embeddedMigrations().length);
  expect(schemaOf(db).some((row) => (row as { name: string }).name === "users")).toBe(true);
  db.$client.close();
});

// Several processes sharing one port start together on a file none of them has seen: each opens
// it (WAL, the probe write) and finds it unmigrated; one applies the migrations, and the others
// must wait for it and start, not fail.
test("processes starting together on a new file all open and migrate it", async () => {
  const dir = tempDir();
  dirs.push(dir);
  const path = join(dir.path, "together.db");
  const root = join(import.meta.dir, "../..");
  const script = `
    const { openDatabase } = await import(${JSON.stringify(join(root, "src/db/client.ts"))});
    const { applyMigrations } = await import(${JSON.stringify(join(root, "src/db/migrate.ts"))});
    await Bun.sleep(Number(process.env.START_AT) - Date.now());
    const db = openDatabase(process.env.DB);
    applyMigrations(db);
    db.$client.close();
  `;
  const startAt = String(Date.now() + 1_500);
  const runs = Array.from({ length: 6 }, () =>
    Bun.spawn(["bun", "-e", script], {
      env: { PATH: process.env.PATH ?? "", DB: path, START_AT: startAt },
      stdout: "ignore",
      stderr: "pipe",
    }),
  );
  const exits = await Promise.all(runs.map((run) => run.exited));
  const errors = await Promise.all(runs.map((run) => new Response(run.stderr).text()));
  expect({ exits, errors: errors.filter(Boolean) }).toEqual({
    exits: [0, 0, 0, 0, 0, 0],
    errors: [],
  });
  const db = openDatabase(path);
  expect(appliedOf(db)).toHaveLength(embeddedMigrations().length);
  db.$client.close();
}, 20_000);
