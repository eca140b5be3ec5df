/**
 * @module
 * Deletes of rows that hold long text, bounded by that text as well as by their count: with
 * `secure_delete` each byte deleted is written over, and 1,000 of the longest chat replies (~400
 * MB) held every request 1–6 s (probe 85e F2). Chat's deletes and the WhatsApp outbox's prune
 * choose their rows through `idsWithinBytes`.
 */
import { type SQL, sql } from "drizzle-orm";
import type { SQLiteTable } from "drizzle-orm/sqlite-core";

/** The text one delete takes at most (its first row always, however long). */
export const DELETE_PART_BYTES = 4 * 1024 * 1024;

/**
 * The ids among those `which` selects, in id order, as far as their text (`bytes`, a row's length
 * read from its header with `octet_length`, never its text) sums to `maxBytes`; the first always.
 */
export function idsWithinBytes(
  table: SQLiteTable,
  bytes: SQL,
  which: SQL,
  maxBytes = DELETE_PART_BYTES,
): SQL {
  return sql`SELECT id FROM (
      SELECT id, row_number() OVER (ORDER BY id) AS nth, sum(${bytes}) OVER (ORDER BY id) AS upto
      FROM ${table} WHERE id IN (${which}))
    WHERE nth = 1 OR upto <= ${maxBytes}`;
}
