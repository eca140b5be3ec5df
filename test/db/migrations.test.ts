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
import {
  applyMigrations,
  MIGRATIONS_FOLDER,
  MigrationRecordError,
  migrationStatus,
} from "../../src/db/migrate";
import { applyMigrationsFrom } from "../../src/db/migrate-from-folder";
import {
  embeddedMigrations,
  LATEST_MIGRATION_MILLIS,
  MIGRATION_TAG_BY_MILLIS,
} from "../../src/db/migrations";
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
  applyMigrationsFrom(folder.db, MIGRATIONS_FOLDER);
  expect(schemaOf(embedded.db)).toEqual(schemaOf(folder.db));
  expect(appliedOf(embedded.db)).toEqual(appliedOf(folder.db));
  expect(appliedOf(embedded.db).length).toBe(embeddedMigrations().length);

  applyMigrations(embedded.db);
  expect(appliedOf(embedded.db)).toEqual(appliedOf(folder.db));
  embedded.db.$client.close();
  folder.db.$client.close();
});

/** An older release's database: every migration but the last two applied. */
function olderDatabase() {
  const { dir, db } = freshDatabase();
  const older = join(dir, "drizzle-older");
  cpSync(MIGRATIONS_FOLDER, older, { recursive: true });
  const journalPath = join(older, "meta", "_journal.json");
  const journal = JSON.parse(readFileSync(journalPath, "utf8"));
  journal.entries = journal.entries.slice(0, -2);
  writeFileSync(journalPath, JSON.stringify(journal));
  applyMigrationsFrom(db, older);
  return db;
}

test("a database an older release migrated gets only the migrations it lacks", () => {
  const db = olderDatabase();
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

test("a migrations table that records a newer migration than its tables have is refused, naming the first missing one", () => {
  const db = olderDatabase();
  // What an edit (or a row copied from another database) leaves: the newest row claims the latest.
  db.$client.run("INSERT INTO __drizzle_migrations (hash, created_at) VALUES ('x', ?)", [
    LATEST_MIGRATION_MILLIS,
  ]);
  const secondLast = embeddedMigrations().at(-2)!;
  const tagOf = (millis: number) => MIGRATION_TAG_BY_MILLIS.get(millis);
  expect(() => applyMigrations(db)).toThrow(MigrationRecordError);
  expect(() => applyMigrations(db)).toThrow(
    `records ${tagOf(LATEST_MIGRATION_MILLIS)} as applied but not the older ${tagOf(secondLast.folderMillis)}`,
  );
  // Nothing was applied: the missing migration's index is still absent.
  expect(
    appliedOf(db).some(
      (row) => Number((row as { created_at: number }).created_at) === secondLast.folderMillis,
    ),
  ).toBe(false);
  db.$client.close();
});

test("a row deleted from the middle of the migrations table is refused, even when the newest is the latest", () => {
  const { db } = freshDatabase();
  applyMigrations(db);
  const third = embeddedMigrations()[2]!;
  db.$client.run("DELETE FROM __drizzle_migrations WHERE created_at = ?", [third.folderMillis]);
  expect(() => applyMigrations(db)).toThrow(
    `but not the older ${MIGRATION_TAG_BY_MILLIS.get(third.folderMillis)}`,
  );
  db.$client.close();
});

test("a created_at that is not a number (text, a blob, none) is refused, naming its row: drizzle would sort it above or below every migration", () => {
  for (const value of ["'soon'", "x'00'", "1e999", "NULL"]) {
    const db = olderDatabase();
    db.$client.run(`INSERT INTO __drizzle_migrations (hash, created_at) VALUES ('x', ${value})`);
    const rowid = embeddedMigrations().length - 2 + 1;
    expect(() => applyMigrations(db)).toThrow(MigrationRecordError);
    expect(() => applyMigrations(db)).toThrow(
      `the migrations table's row ${rowid} has a created_at that is not a number`,
    );
    db.$client.close();
  }
});

test("a time that is no migration's does not hide a gap", () => {
  const db = olderDatabase();
  db.$client.run("INSERT INTO __drizzle_migrations (hash, created_at) VALUES ('y', ?)", [
    LATEST_MIGRATION_MILLIS + 1,
  ]);
  const secondLast = embeddedMigrations().at(-2)!;
  expect(() => applyMigrations(db)).toThrow(
    `records one made at ${LATEST_MIGRATION_MILLIS + 1} as applied but not the older ${MIGRATION_TAG_BY_MILLIS.get(secondLast.folderMillis)}`,
  );
  db.$client.close();
});

test("migrations from a newer release are counted, not refused: a rollback still starts", () => {
  const { db } = freshDatabase();
  const all = embeddedMigrations().length;
  const latestTag = MIGRATION_TAG_BY_MILLIS.get(LATEST_MIGRATION_MILLIS) ?? null;
  expect(migrationStatus(db)).toEqual({
    applied: 0,
    newestTag: null,
    fromNewerReleases: 0,
    appliedNow: [],
    appliedTags: [],
  });
  const current = {
    applied: all,
    newestTag: latestTag,
    fromNewerReleases: 0,
    appliedNow: [],
    appliedTags: [...MIGRATION_TAG_BY_MILLIS.values()],
  };
  // The first call applied every migration; later calls apply none.
  expect(applyMigrations(db)).toEqual({
    ...current,
    appliedNow: [...MIGRATION_TAG_BY_MILLIS.values()],
  });
  expect(applyMigrations(db)).toEqual(current);
  for (const offset of [1, 2]) {
    db.$client.run("INSERT INTO __drizzle_migrations (hash, created_at) VALUES ('next', ?)", [
      LATEST_MIGRATION_MILLIS + offset,
    ]);
  }
  expect(applyMigrations(db)).toEqual({ ...current, fromNewerReleases: 2 });
  expect(migrationStatus(db)).toEqual({ ...current, fromNewerReleases: 2 });
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
