/**
 * @module
 * The schema as the migrations made it. Someone who can write the database file can change more
 * than rows: a table rebuilt with a constraint that ignores what conflicts with it
 * (`UNIQUE (…) ON CONFLICT IGNORE` on a generated column) makes Palisade's own writes — a key's
 * revocation, a logout, a role change, an erasure, an outbox row's sent mark — do nothing, with no
 * error, while Palisade says and audits that they happened. No seal sees it (the rows are genuine;
 * they just stop changing), and no trigger is involved (db/foreign-triggers.ts).
 *
 * So every table and index the migrations create must be in the file exactly as they create it:
 * the same definition, to the character, on the same table. The expected set is made by applying
 * the same embedded migrations to an in-memory database (a few milliseconds, once per process).
 * Of the objects the migrations do not make, a unique index on one of their tables is refused too
 * (a write that conflicts with it fails, or an `ON CONFLICT DO NOTHING` takes it for a duplicate:
 * a Stripe event skipped, an outbox row's sent mark failing after Graph took the reply), and so is
 * a schema entry whose kind is not exactly `table`, `index`, `view` or `trigger` (only an edit of
 * `sqlite_master` itself makes one: SQLite still runs a `Trigger`, and neither finds nor drops it
 * as a trigger). Other tables, views and indexes are left alone; triggers are dropped elsewhere. A
 * start or CLI command refuses a file that differs; a running service checks again whenever the
 * file's schema changes (SQLite's `schema_version`, read at each maintenance tick) and stops.
 */
import { Database } from "bun:sqlite";
import { drizzleOf } from "./client";
import { applyMigrations } from "./migrate";

interface SchemaObject {
  type: string;
  name: string;
  table: string;
  sql: string | null;
}

const READ_SCHEMA = `SELECT type, name, tbl_name AS "table", sql FROM main.sqlite_master
  WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'`;

/** What the embedded migrations create, read from a database they were just applied to. */
export function expectedSchema(): ReadonlyMap<string, SchemaObject> {
  const memory = new Database(":memory:", { strict: true });
  try {
    applyMigrations(drizzleOf(memory));
    return byKey(memory.query<SchemaObject, []>(READ_SCHEMA).all());
  } finally {
    memory.close();
  }
}

function byKey(objects: readonly SchemaObject[]): Map<string, SchemaObject> {
  return new Map(objects.map((object) => [`${object.type} ${object.name}`, object]));
}

const KNOWN_KINDS = "('table', 'index', 'view', 'trigger')";

/** What differs from `expected`, one phrase each ("table api_keys is not as …"); empty when none. */
export function schemaDifferences(
  sqlite: Database,
  expected: ReadonlyMap<string, SchemaObject>,
): string[] {
  const found = byKey(sqlite.query<SchemaObject, []>(READ_SCHEMA).all());
  const differences: string[] = [];
  for (const [key, object] of expected) {
    const stored = found.get(key);
    if (!stored) differences.push(`${key} is missing`);
    else if (stored.table !== object.table || stored.sql !== object.sql) {
      differences.push(`${key} is not as its migrations made it`);
    }
  }
  const tables = new Set(
    [...expected.values()].filter((o) => o.type === "table").map((o) => o.name),
  );
  for (const [key, object] of found) {
    if (object.type !== "index" || expected.has(key) || !tables.has(object.table)) continue;
    if (isUniqueIndex(sqlite, object.table, object.name)) {
      differences.push(`${key}, a unique index on ${object.table}, is not one of its migrations'`);
    }
  }
  const unknown = sqlite
    .query<{ name: string; type: string }, []>(
      `SELECT name, type FROM main.sqlite_master WHERE type NOT IN ${KNOWN_KINDS}`,
    )
    .all();
  for (const { name, type } of unknown) {
    differences.push(
      `${name} has the schema kind ${JSON.stringify(type)}, written into sqlite_master`,
    );
  }
  return differences;
}

function isUniqueIndex(sqlite: Database, table: string, index: string): boolean {
  const indexes = sqlite
    .query<{ name: string; unique: number }, []>(
      `PRAGMA main.index_list("${table.replaceAll('"', '""')}")`,
    )
    .all();
  return indexes.some((entry) => entry.name === index && entry.unique === 1);
}

/**
 * The one line a start or CLI command ends with on a file whose schema was changed. A file that
 * records migrations of a newer release (a rollback) may have been changed by them: it says so.
 */
export function schemaChangedMessage(
  databasePath: string,
  differences: readonly string[],
  newerMigrations = 0,
): string {
  const shown = differences.slice(0, 5).join("; ");
  const more = differences.length > 5 ? `; and ${differences.length - 5} more` : "";
  const remedy =
    newerMigrations > 0
      ? `the file records ${newerMigrations} migrations of a newer release, which may have made the change: run that release, or restore a backup made by this one`
      : "a changed table can make Palisade's writes silently do nothing: restore the file from a backup";
  return `DATABASE_PATH ${databasePath}: the schema was changed outside Palisade (${shown}${more}); ${remedy}`;
}

export interface SchemaGuard {
  /** What differs now; the expected schema is made at the first call. */
  differences(): string[];
  /**
   * What differs, if the file's schema changed since the last call (or this is the first); an
   * empty list otherwise. One `PRAGMA schema_version` read when nothing changed.
   */
  changes(): string[];
}

export function createSchemaGuard(sqlite: Database): SchemaGuard {
  let expected: ReadonlyMap<string, SchemaObject> | null = null;
  let checkedVersion: number | null = null;
  const version = () =>
    sqlite.query<{ schema_version: number }, []>("PRAGMA schema_version").get()!.schema_version;
  const differences = () => {
    expected ??= expectedSchema();
    return schemaDifferences(sqlite, expected);
  };
  return {
    differences,
    changes() {
      const now = version();
      if (now === checkedVersion) return [];
      const found = differences();
      // A file found changed is checked again at every call until it is as it should be.
      checkedVersion = found.length === 0 ? now : null;
      return found;
    },
  };
}
