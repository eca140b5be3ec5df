/**
 * @module
 * Palisade makes its database only where there is none: at a path that names no file, or in an
 * empty one. A start or a command that migrates (`db:migrate`, `users:create`, `keys:create`) given
 * a DATABASE_PATH that names another application's SQLite file (a mistyped path, Grafana's
 * `grafana.db`) added Palisade's tables to it, and served from it (probe 43c F2). Before anything is
 * written, a read-only look (db/file-look.ts) tells a file that is Palisade's, or on its way to
 * being it, from one that holds tables and is not.
 */
import { type FileTables, MIGRATIONS_TABLE, tablesOf } from "./file-look";
import { MIGRATION_TAG_BY_MILLIS } from "./migrations";

/** Tables every Palisade database has from its first migration on, and no other application's. */
export const PALISADE_TABLES = ["audit_events", "rate_limit_counters", "users"] as const;

/**
 * Why the file at `path` must not be written as Palisade's database (the end of a line that begins
 * `DATABASE_PATH <path>`), or null when it may: none there, an empty one, or Palisade's. A file that
 * is no SQLite database is left to the open, which says so. Throws SQLite's error for a lock.
 */
export function whyNotPalisades(path: string, busyTimeoutMs: number): string | null {
  const found = tablesOf(path, busyTimeoutMs);
  if (found === null || isPalisades(found)) return null;
  if (PALISADE_TABLES.every((name) => found.tables.has(name))) {
    return "holds Palisade's tables but no record of its migrations: the file was altered; restore it from a backup";
  }
  return "holds no Palisade database (another application's tables): Palisade makes its database only at a path that names no file or in an empty file, and writes nothing to another's (check the path)";
}

function isPalisades({ tables, migrations }: FileTables): boolean {
  if (tables.size === 0) return true;
  if (!tables.has(MIGRATIONS_TABLE)) return false;
  // Its tables and a migrations table: the migrations judge what that table records.
  if (PALISADE_TABLES.every((name) => tables.has(name))) return true;
  // A first migration under way in another process, or stopped half way: the migrations table is
  // made before the transaction that fills it with the rest.
  if (tables.size === 1 && migrations.length === 0) return true;
  // A migrations table that records one of Palisade's (the schema guard judges the tables).
  return migrations.some((createdAt) => MIGRATION_TAG_BY_MILLIS.has(Number(createdAt)));
}
