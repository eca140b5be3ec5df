import { fileURLToPath } from "node:url";
import { migrate } from "drizzle-orm/bun-sqlite/migrator";
import type { MigrationConfig, MigrationMeta } from "drizzle-orm/migrator";
import type { AppDatabase } from "./client";
import { embeddedMigrations, LATEST_MIGRATION_MILLIS } from "./migrations";

/** The source tree's `drizzle/` (drizzle-kit, tests); a bundle has no such folder beside it. */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL("../../drizzle", import.meta.url));

/**
 * Applies the committed migrations this database has not seen yet: the ones embedded in the code
 * (`./migrations`), or those of `migrationsFolder` when one is given (tests of older layouts).
 */
export function applyMigrations(db: AppDatabase, migrationsFolder?: string): void {
  if (migrationsFolder !== undefined) {
    migrate(db, { migrationsFolder });
    return;
  }
  if (atLatest(db)) return;
  // drizzle's `migrate` is exactly this call after reading the folder; it takes no list of its
  // own, so its internal dialect and session are reached here (test/db/migrations.test.ts holds
  // the result to the folder's: an upgrade that renames them fails there).
  const internal = db as unknown as {
    dialect: { migrate(list: MigrationMeta[], session: unknown, config: MigrationConfig): void };
    session: unknown;
  };
  try {
    internal.dialect.migrate(embeddedMigrations(), internal.session, {
      migrationsFolder: "embedded",
    });
  } catch (error) {
    // Several processes starting together on a new file each found it unmigrated; the one that
    // got the write lock first applied every migration, and this one's first CREATE TABLE then
    // failed. The database is what it should be.
    if (atLatest(db)) return;
    throw error;
  }
}

/**
 * Whether drizzle would apply nothing: it applies each migration newer than the newest applied one,
 * so none when that is the latest embedded. One read of a tiny table instead of the
 * migrator's create-if-missing, read and empty transaction (~1 ms of a restart, measured cold).
 */
function atLatest(db: AppDatabase): boolean {
  try {
    const [row] = db.$client
      .query("SELECT created_at FROM __drizzle_migrations ORDER BY created_at DESC LIMIT 1")
      .values();
    return row !== undefined && Number(row[0]) >= LATEST_MIGRATION_MILLIS;
  } catch {
    // No such table yet: a new database, migrated below.
    return false;
  }
}
