/**
 * What SQLite plans for the statements a piece of work prepares: how a test tells that a query
 * finds its rows through an index rather than by reading a whole table (a plan is fixed by the
 * schema and the query, not by the rows, so a small file tells what a large one would do).
 */
import type { Database } from "bun:sqlite";

/** The text of every statement `work` prepares or queries on `sqlite`, in order. */
export async function statementsPrepared(sqlite: Database, work: () => unknown): Promise<string[]> {
  const statements: string[] = [];
  const prepare = sqlite.prepare.bind(sqlite);
  const query = sqlite.query.bind(sqlite);
  sqlite.prepare = ((text: string, ...rest: unknown[]) => {
    statements.push(text);
    return (prepare as (...args: unknown[]) => unknown)(text, ...rest);
  }) as typeof sqlite.prepare;
  // `query` keeps its statements (a second call returns the first one's): each call is told too.
  sqlite.query = ((text: string) => {
    statements.push(text);
    return query(text);
  }) as typeof sqlite.query;
  try {
    await work();
  } finally {
    sqlite.prepare = prepare;
    sqlite.query = query;
  }
  return statements;
}

/** `EXPLAIN QUERY PLAN` of a statement, each step's detail (parameters bound to 1). */
export function planOf(sqlite: Database, text: string): string[] {
  return sqlite
    .query(`EXPLAIN QUERY PLAN ${text}`)
    .all(...(text.match(/\?/g) ?? []).map(() => 1))
    .map((row) => (row as { detail: string }).detail);
}
