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
 * Of the objects the migrations do not make, any index on one of their tables is refused too,
 * whatever its name (a unique one turns writes into conflicts: a Stripe event taken for a
 * duplicate, an outbox row's sent mark failing after Graph took the reply; an expression one can
 * fail every write it indexes: a logout, a revocation), and so is a table whose foreign key refers
 * to one of them (a RESTRICT stops an erasure), and a schema entry whose kind is not exactly
 * `table`, `index`, `view` or `trigger` (only an edit of `sqlite_master` itself makes one: SQLite
 * still runs a `Trigger`, and neither finds nor drops it as a trigger). Other tables, views and
 * indexes are left alone; triggers are dropped elsewhere. Names from the file are shown escaped and
 * cut. A
 * start or CLI command refuses a file that differs; a running service checks again whenever the
 * file's schema changes (SQLite's `schema_version`, read at each maintenance tick) and stops.
 */

import { Database } from "bun:sqlite";
import { spellOut } from "../logging/spell-out";
import { drizzleOf } from "./client";
import { applyMigrations } from "./migrate";
import { markedVersion, readingsMarkName } from "./readings-mark";

interface SchemaObject {
  type: string;
  name: string;
  table: string;
  sql: string | null;
}

/** The migrations' tables and indexes, and each of their tables' indexes by name (autoindexes too). */
export interface ExpectedSchema {
  objects: ReadonlyMap<string, SchemaObject>;
  indexesOf: ReadonlyMap<string, ReadonlySet<string>>;
}

const READ_SCHEMA = `SELECT type, name, tbl_name AS "table", sql FROM main.sqlite_master
  WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'`;

const quoted = (name: string) => `"${name.replaceAll('"', '""')}"`;

function indexNames(sqlite: Database, table: string): string[] {
  return sqlite
    .query<{ name: string }, []>(`PRAGMA main.index_list(${quoted(table)})`)
    .all()
    .map((entry) => entry.name);
}

/** What the embedded migrations create, read from a database they were just applied to. */
export function expectedSchema(): ExpectedSchema {
  const memory = new Database(":memory:", { strict: true });
  try {
    applyMigrations(drizzleOf(memory));
    const objects = byKey(memory.query<SchemaObject, []>(READ_SCHEMA).all());
    const indexesOf = new Map<string, ReadonlySet<string>>();
    for (const object of objects.values()) {
      if (object.type === "table") {
        indexesOf.set(object.name, new Set(indexNames(memory, object.name)));
      }
    }
    return { objects, indexesOf };
  } finally {
    memory.close();
  }
}

function byKey(objects: readonly SchemaObject[]): Map<string, SchemaObject> {
  return new Map(objects.map((object) => [`${object.type} ${object.name}`, object]));
}

const KNOWN_KINDS = "('table', 'index', 'view', 'trigger')";
/** A name from the file as a difference shows it (logging/spell-out). */
const shown = (name: string) => spellOut(name);

/**
 * What differs from `expected`, one phrase each ("table api_keys is not as …"); empty when none.
 * The readings' mark (db/readings-mark.ts) of `readingsVersion` is expected beside the migrations'
 * objects, and another version's is a difference: another release took the file. With no version
 * (inside the migrations, before a start takes the file), every well-formed mark is.
 */
export function schemaDifferences(
  sqlite: Database,
  expected: ExpectedSchema,
  readingsVersion: string | null = null,
): string[] {
  const found = byKey(sqlite.query<SchemaObject, []>(READ_SCHEMA).all());
  const differences: string[] = [];
  for (const [key, object] of expected.objects) {
    const stored = found.get(key);
    if (!stored) differences.push(`${key} is missing`);
    else if (stored.table !== object.table || stored.sql !== object.sql) {
      differences.push(`${key} is not as its migrations made it`);
    }
  }
  // An index of someone else's on one of these tables, whatever its name (`sqlite_…` too): a
  // unique one turns writes into conflicts, an expression one can fail every write it indexes.
  for (const [table, indexes] of expected.indexesOf) {
    if (!found.has(`table ${table}`)) continue;
    for (const name of indexNames(sqlite, table)) {
      if (indexes.has(name)) continue;
      const marked =
        table === "users" ? markedVersion(name, found.get(`index ${name}`)?.sql ?? null) : null;
      if (marked === null) {
        differences.push(`index ${shown(name)} on ${table} is not one of its migrations'`);
      } else if (readingsVersion !== null && marked !== readingsVersion) {
        differences.push(
          `index ${readingsMarkName(marked)} on users marks the accounts' readings as another release's (reading version ${marked}, this one's ${readingsVersion})`,
        );
      }
    }
  }
  // A table of someone else's whose foreign key points at one of these: a RESTRICT stops a delete
  // (an erasure), a cascade changes what a write does.
  const tables = sqlite
    .query<{ name: string }, []>("SELECT name FROM main.sqlite_master WHERE type = 'table'")
    .all();
  // SQLite matches table names whatever their case (`REFERENCES USERS`), and a table may be given
  // any name through sqlite_master (`sqlite_stat1`): every other table is looked at, by case.
  const ours = new Set([...expected.indexesOf.keys()].map((table) => table.toLowerCase()));
  for (const { name } of tables) {
    if (expected.indexesOf.has(name)) continue;
    const references = sqlite
      .query<{ table: string }, []>(`PRAGMA main.foreign_key_list(${quoted(name)})`)
      .all();
    const into = references.find((reference) => ours.has(reference.table.toLowerCase()));
    if (into) {
      differences.push(
        `table ${shown(name)} refers to ${shown(into.table)} and is not one of its migrations'`,
      );
    }
  }
  const unknown = sqlite
    .query<{ name: string; type: string }, []>(
      `SELECT name, type FROM main.sqlite_master WHERE type NOT IN ${KNOWN_KINDS}`,
    )
    .all();
  for (const { name, type } of unknown) {
    differences.push(
      `${shown(name)} has the schema kind "${shown(type)}", written into sqlite_master`,
    );
  }
  return differences;
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

/** The schema differs from what the migrations made: `differences` says how. */
export class SchemaChangedError extends Error {
  override name = "SchemaChangedError";
  constructor(readonly differences: readonly string[]) {
    super(`the schema was changed outside Palisade (${differences.slice(0, 5).join("; ")})`);
  }
}

/**
 * Refuses a file whose schema differs, from inside the transaction that migrated it: thrown there,
 * it undoes the migrations and what their companions sealed (probe 66 F3, 65 F5: a start refused
 * after its migrations committed had sealed rows of a file put back before them, and what it
 * recorded of that could be skipped or made to fail by the same file writer).
 */
export function assertSchemaUnchanged(sqlite: Database): void {
  const differences = schemaDifferences(sqlite, expectedSchema());
  if (differences.length > 0) throw new SchemaChangedError(differences);
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

/**
 * `readingsVersion`: the readings' mark the process serves by, once it took the file (null before,
 * and for a command that writes no readings: any mark).
 */
export function createSchemaGuard(
  sqlite: Database,
  readingsVersion: () => string | null = () => null,
): SchemaGuard {
  let expected: ExpectedSchema | null = null;
  let checkedVersion: number | null = null;
  const version = () =>
    sqlite.query<{ schema_version: number }, []>("PRAGMA schema_version").get()!.schema_version;
  const differences = () => {
    expected ??= expectedSchema();
    return schemaDifferences(sqlite, expected, readingsVersion());
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
