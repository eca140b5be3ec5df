/**
 * What a test leaves behind (apps, database files, temp folders), undone after each test in the
 * reverse order it was made.
 */
import { afterEach } from "bun:test";
import { join } from "node:path";
import { type AppDatabase, openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { buildTestApp, type TestApp, tempDir } from "./app";

/** A list to push undo steps on; every step runs after each test, last pushed first. */
export function cleanupsAfterEach(): (() => void)[] {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const cleanup of cleanups.splice(0).reverse()) cleanup();
  });
  return cleanups;
}

/** The path of a database file in a temp folder that is removed after the test. */
export function tempDatabaseFile(cleanups: (() => void)[]): string {
  const dir = tempDir();
  cleanups.push(dir.remove);
  return join(dir.path, "palisade.db");
}

/** A database file in a temp folder removed after the test, migrated, and its open database. */
export function migratedDatabaseFile(cleanups: (() => void)[]): { path: string; db: AppDatabase } {
  const path = tempDatabaseFile(cleanups);
  const db = openDatabase(path);
  applyMigrations(db);
  return { path, db };
}

/** A test app (see buildTestApp) that is closed after the test. */
export function appClosedAfter(
  cleanups: (() => void)[],
  options?: Parameters<typeof buildTestApp>[0],
): TestApp {
  const target = buildTestApp(options);
  cleanups.push(() => target.close());
  return target;
}
