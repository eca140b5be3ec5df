/**
 * @module
 * Whether a query of the form `SELECT EXISTS (…) [OR EXISTS (…)] AS found` finds anything: the
 * check the start and the upgrade make of the file before reading it (a table there, a row of a
 * kind, a column), in raw SQL, where Drizzle's query building costs more than the query.
 */
import type { Database, SQLQueryBindings } from "bun:sqlite";

export function finds(
  sqlite: Database,
  existsQuery: string,
  ...params: SQLQueryBindings[]
): boolean {
  return (
    sqlite.query<{ found: number }, SQLQueryBindings[]>(existsQuery).get(...params)?.found === 1
  );
}
