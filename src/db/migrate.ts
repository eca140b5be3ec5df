import { fileURLToPath } from "node:url";
import { firstLine } from "../error-line";
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

/**
 * drizzle's migrations table, as its migrator makes it, to the whitespace (SQLite keeps the
 * statement as written, and test/db/migrations.test.ts holds it to drizzle's migrator). A first
 * start makes it before the transaction that applies the migrations, so a start stopped between
 * the two leaves a file holding this table alone, empty (db/foreign-database.ts tells it so).
 */
export const MIGRATIONS_TABLE_DDL =
  'CREATE TABLE IF NOT EXISTS "__drizzle_migrations" (\n\t\t\t\tid SERIAL PRIMARY KEY,\n\t\t\t\thash text NOT NULL,\n\t\t\t\tcreated_at numeric\n\t\t\t)';

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
  /** Every one of this release's tags the table records, oldest first. */
  appliedTags: readonly string[];
}

/**
 * Work that must commit with a migration: run right after its statements, in the same immediate
 * transaction, on the database as that migration left it. The credential seals are made so
 * (modules/auth/seal-upgrade.ts): a process killed half way leaves the file as it was, not
 * migrated and unsealed.
 */
export type MigrationCompanions = ReadonlyMap<string, (db: AppDatabase) => void>;

/**
 * Applies the committed migrations this database has not seen yet: the ones embedded in the code
 * (`./migrations`; a folder's are applied by migrate-from-folder.ts). Returns what the table records then, and which migrations this call applied. `beforeApplying`
 * runs once, in the transaction, before the first of them, and `afterApplying` after the last
 * (and its companion): what either throws applies none, and undoes what the companions did.
 */
export function applyMigrations(
  db: AppDatabase,
  companions: MigrationCompanions = new Map(),
  beforeApplying?: () => void,
  afterApplying?: () => void,
): MigrationStatus {
  const applied = appliedMigrationTimes(db);
  if (applied !== null) refuseGaps(applied);
  if (applied !== null && newestOf(applied) >= LATEST_MIGRATION_MILLIS) return statusOf(applied);
  const sqlite = db.$client;
  // drizzle's own table and rows, as its migrator writes them. Only the transaction is ours:
  // companions commit with their migration, and processes starting together on a new file migrate
  // it one after the other.
  sqlite.run(MIGRATIONS_TABLE_DDL);
  sqlite.run("BEGIN IMMEDIATE");
  // The table exists now: what another process applied while this one waited is in it.
  let before = new Set<number>();
  try {
    before = appliedMigrationTimes(db) ?? before;
    refuseGaps(before);
    const newest = newestOf(before);
    const record = sqlite.prepare(
      'INSERT INTO "__drizzle_migrations" ("hash", "created_at") VALUES (?, ?)',
    );
    let first = true;
    for (const migration of embeddedMigrations()) {
      if (migration.folderMillis <= newest) continue;
      if (first) beforeApplying?.();
      first = false;
      for (const statement of migration.sql) sqlite.run(statement);
      record.run(migration.hash, migration.folderMillis);
      companions.get(MIGRATION_TAG_BY_MILLIS.get(migration.folderMillis) ?? "")?.(db);
    }
    if (!first) afterApplying?.();
    sqlite.run("COMMIT");
  } catch (error) {
    if (sqlite.inTransaction) sqlite.run("ROLLBACK");
    throw error;
  }
  return statusOf(appliedMigrationTimes(db) ?? new Set(), before);
}

/** The one line a start or `db:migrate` ends with when the migrations could not be applied. */
export function migrationsFailed(databasePath: string, error: unknown): string {
  return `DATABASE_PATH ${databasePath}: migrations failed: ${firstLine(error)}`;
}

/** What the migrations table records now (`db:migrate` prints it). */
export function migrationStatus(db: Pick<AppDatabase, "$client">): MigrationStatus {
  return statusOf(appliedMigrationTimes(db) ?? new Set());
}

/** What `applied` records; `before` is what it recorded before this call applied the rest. */
export function statusOf(
  applied: ReadonlySet<number>,
  before: ReadonlySet<number> | null = applied,
): MigrationStatus {
  let count = 0;
  let newestTag: string | null = null;
  const appliedNow: string[] = [];
  const appliedTags: string[] = [];
  for (const [millis, tag] of MIGRATION_TAG_BY_MILLIS) {
    if (applied.has(millis)) {
      count++;
      newestTag = tag;
      appliedTags.push(tag);
      if (!before?.has(millis)) appliedNow.push(tag);
    }
  }
  let fromNewerReleases = 0;
  for (const millis of applied) if (millis > LATEST_MIGRATION_MILLIS) fromNewerReleases++;
  return { applied: count, newestTag, fromNewerReleases, appliedNow, appliedTags };
}

/**
 * When each applied migration was made (drizzle's `created_at`, the journal's `when`), or null
 * without a migrations table (a new database). One read of a tiny table instead of the migrator's
 * create-if-missing, read and empty transaction (~1 ms of a restart, measured cold).
 */
export function appliedMigrationTimes(db: Pick<AppDatabase, "$client">): Set<number> | null {
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
