import { fileURLToPath } from "node:url";
import { migrate } from "drizzle-orm/bun-sqlite/migrator";
import type { MigrationConfig, MigrationMeta } from "drizzle-orm/migrator";
import type { AppDatabase } from "./client";
import { embeddedMigrations } from "./migrations";

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
  // drizzle's `migrate` is exactly this call after reading the folder; it takes no list of its
  // own, so its internal dialect and session are reached here (test/db/migrations.test.ts holds
  // the result to the folder's: an upgrade that renames them fails there).
  const internal = db as unknown as {
    dialect: { migrate(list: MigrationMeta[], session: unknown, config: MigrationConfig): void };
    session: unknown;
  };
  internal.dialect.migrate(embeddedMigrations(), internal.session, {
    migrationsFolder: "embedded",
  });
}
