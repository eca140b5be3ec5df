import { fileURLToPath } from "node:url";
import { migrate } from "drizzle-orm/bun-sqlite/migrator";
import type { MigrationConfig, MigrationMeta } from "drizzle-orm/migrator";
import type { AppDatabase } from "./client";
import { embeddedMigrations, LATEST_MIGRATION_MILLIS, MIGRATION_TAG_BY_MILLIS } from "./migrations";

/**
 * The migrations table says a migration was applied while an older one never was, or holds a time
 * that is not a number: the table was edited, or the file pieced together from two databases.
 * drizzle applies only what is newer than the newest row, so the missing ones would never run and
 * the start would fail on a table that is not there. Starting refuses instead, naming the first
 * missing migration or the row.
 */
export class MigrationRecordError extends Error {
  override name = "MigrationRecordError";
}

/** The source tree's `drizzle/` (drizzle-kit, tests); a bundle has no such folder beside it. */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL("../../drizzle", import.meta.url));

/** What the migrations table records, against this release's migrations. */
export interface MigrationStatus {
  /** How many of this release's migrations it records. */
  applied: number;
  /** The newest of those, by its tag; null when it records none. */
  newestTag: string | null;
  /**
   * How many newer than every one this release has: a newer release migrated the file and this one
   * was started on it (a rollback). Accepted — refusing would block the rollback — but worth
   * saying, since a newer schema can refuse an older release's writes.
   */
  fromNewerReleases: number;
  /** The tags this call applied, oldest first: what the database did not have before it. */
  appliedNow: readonly string[];
}

/**
 * Applies the committed migrations this database has not seen yet: the ones embedded in the code
 * (`./migrations`), or those of `migrationsFolder` when one is given (tests of older layouts).
 * Returns what the table records then.
 */
export function applyMigrations(db: AppDatabase, migrationsFolder?: string): MigrationStatus {
  if (migrationsFolder !== undefined) {
    const before = appliedMigrationTimes(db);
    migrate(db, { migrationsFolder });
    return statusOf(appliedMigrationTimes(db) ?? new Set(), before);
  }
  const applied = appliedMigrationTimes(db);
  if (applied !== null) refuseGaps(applied);
  if (applied !== null && newestOf(applied) >= LATEST_MIGRATION_MILLIS) return statusOf(applied);
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
    const now = appliedMigrationTimes(db);
    if (now !== null && newestOf(now) >= LATEST_MIGRATION_MILLIS) return statusOf(now);
    throw error;
  }
  return statusOf(appliedMigrationTimes(db) ?? new Set(), applied);
}

/** The one line a start or `db:migrate` ends with when the migrations could not be applied. */
export function migrationsFailed(databasePath: string, error: unknown): string {
  const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
  return `DATABASE_PATH ${databasePath}: migrations failed: ${reason}`;
}

/** What the migrations table records now (`db:migrate` prints it). */
export function migrationStatus(db: AppDatabase): MigrationStatus {
  return statusOf(appliedMigrationTimes(db) ?? new Set());
}

/** What `applied` records; `before` is what it recorded before this call applied the rest. */
function statusOf(
  applied: ReadonlySet<number>,
  before: ReadonlySet<number> | null = applied,
): MigrationStatus {
  let count = 0;
  let newestTag: string | null = null;
  const appliedNow: string[] = [];
  for (const [millis, tag] of MIGRATION_TAG_BY_MILLIS) {
    if (applied.has(millis)) {
      count++;
      newestTag = tag;
      if (!before?.has(millis)) appliedNow.push(tag);
    }
  }
  let fromNewerReleases = 0;
  for (const millis of applied) if (millis > LATEST_MIGRATION_MILLIS) fromNewerReleases++;
  return { applied: count, newestTag, fromNewerReleases, appliedNow };
}

/**
 * When each applied migration was made (drizzle's `created_at`, the journal's `when`), or null
 * without a migrations table (a new database). One read of a tiny table instead of the migrator's
 * create-if-missing, read and empty transaction (~1 ms of a restart, measured cold).
 */
function appliedMigrationTimes(db: AppDatabase): Set<number> | null {
  let rows: unknown[][];
  try {
    // drizzle's `id SERIAL` is no rowid alias in SQLite (every id is NULL): rows are named by rowid.
    rows = db.$client.query("SELECT rowid, created_at FROM __drizzle_migrations").values();
  } catch {
    // No such table yet: a new database, migrated in full.
    return null;
  }
  const applied = new Set<number>();
  for (const [rowid, createdAt] of rows) {
    // drizzle writes every row's created_at, and orders by it: text and blobs sort above every
    // number (one would stand for the newest migration and hide every missing one), and a missing
    // one below (the migration it stood for would be run again).
    if (typeof createdAt !== "number" || !Number.isFinite(createdAt)) {
      throw new MigrationRecordError(
        `the migrations table's row ${Number(rowid)} has a created_at that is not a number; it was edited: restore the file from a backup`,
      );
    }
    applied.add(createdAt);
  }
  return applied;
}

function newestOf(applied: ReadonlySet<number>): number {
  let newest = Number.NEGATIVE_INFINITY;
  for (const millis of applied) if (millis > newest) newest = millis;
  return newest;
}

/** Every migration older than the newest applied one must have been applied too. */
function refuseGaps(applied: ReadonlySet<number>): void {
  const newest = newestOf(applied);
  for (const [millis, tag] of MIGRATION_TAG_BY_MILLIS) {
    if (millis < newest && !applied.has(millis)) {
      const newestTag = MIGRATION_TAG_BY_MILLIS.get(newest) ?? `one made at ${newest}`;
      throw new MigrationRecordError(
        `the migrations table records ${newestTag} as applied but not the older ${tag}; it was edited or copied from another database: restore the file from a backup`,
      );
    }
  }
}
