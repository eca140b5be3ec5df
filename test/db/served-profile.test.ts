/**
 * The profile a start records in its database, as an operator command reads it back before its
 * configuration (db/served-profile.ts): the last one recorded, and nothing from a file that holds
 * none, an older release's, a value of another type, or no database at all.
 */
import type { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { recordServedProfile, servedProfileOf } from "../../src/db/served-profile";
import { cleanupsAfterEach, tempDatabaseFile } from "../support/cleanups";

const cleanups = cleanupsAfterEach();

function migratedFile(): { path: string; sqlite: Database } {
  const path = tempDatabaseFile(cleanups);
  const db = openDatabase(path);
  applyMigrations(db);
  cleanups.push(() => db.$client.close());
  return { path, sqlite: db.$client };
}

test("the last profile recorded is read back, one row however many starts", () => {
  const { path, sqlite } = migratedFile();
  expect(servedProfileOf(path)).toBeNull();
  recordServedProfile(sqlite, "production", 1_000);
  expect(servedProfileOf(path)).toBe("production");
  recordServedProfile(sqlite, "development", 2_000);
  expect(servedProfileOf(path)).toBe("development");
  expect(sqlite.query("SELECT id, profile, served_at AS at FROM served_profile").all()).toEqual([
    { id: 1, profile: "development", at: 2_000 },
  ]);
  // One row only: another id is refused by the table itself.
  expect(() =>
    sqlite.run("INSERT INTO served_profile (id, profile, served_at) VALUES (2, 'staging', 1)"),
  ).toThrow();
});

test("nothing is read from an older release's file, a value of another type, a file that is not SQLite, or no file", () => {
  const { path, sqlite } = migratedFile();
  sqlite.run("INSERT INTO served_profile (id, profile, served_at) VALUES (1, x'70726f64', 1)");
  expect(servedProfileOf(path)).toBeNull();
  sqlite.run("DROP TABLE served_profile");
  expect(servedProfileOf(path)).toBeNull();
  const notSqlite = `${tempDatabaseFile(cleanups)}.txt`;
  writeFileSync(notSqlite, "not a database at all, only text that is long enough to be read");
  expect(servedProfileOf(notSqlite)).toBeNull();
  expect(servedProfileOf(`${tempDatabaseFile(cleanups)}.missing`)).toBeNull();
});
