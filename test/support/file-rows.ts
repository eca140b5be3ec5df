/**
 * @module
 * Rows of a database file read as stored and written back as they were: what someone holding the
 * file (not the secrets) does to put back rows from a backup.
 */
import { Database } from "bun:sqlite";

export type Row = Record<string, unknown>;

/** Every row of `table` matching `where`, as stored. */
export function rowsOf(path: string, table: string, where: string, ...values: string[]): Row[] {
  const file = new Database(path, { readonly: true });
  try {
    return file.query(`SELECT * FROM ${table} WHERE ${where}`).all(...values) as Row[];
  } finally {
    file.close();
  }
}

/** Writes `rows` back into `table` as they were (replacing any row of the same key). */
export function copyBack(path: string, table: string, rows: readonly Row[]): void {
  const file = new Database(path);
  try {
    for (const row of rows) {
      const columns = Object.keys(row);
      file
        .query(
          `INSERT OR REPLACE INTO ${table} (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`,
        )
        .run(...(columns.map((column) => row[column]) as string[]));
    }
  } finally {
    file.close();
  }
}
