/**
 * @module
 * The migrations of a folder, applied by drizzle's own migrator: drizzle-kit's folder, and the
 * tests of older layouts (a folder cut short at a migration). Apart from migrate.ts, which a start
 * runs on the embedded migrations, so that a start never loads drizzle's migrator: it loads
 * node:crypto for its hashes, ~3 MB of idle memory (issue #13).
 */
import { migrate } from "drizzle-orm/bun-sqlite/migrator";
import type { AppDatabase } from "./client";
import { appliedMigrationTimes, type MigrationStatus, statusOf } from "./migrate";

/** Applies what `migrationsFolder` holds that the database has not seen; says what it records. */
export function applyMigrationsFrom(db: AppDatabase, migrationsFolder: string): MigrationStatus {
  const before = appliedMigrationTimes(db);
  migrate(db, { migrationsFolder });
  return statusOf(appliedMigrationTimes(db) ?? new Set(), before);
}
