/**
 * @module
 * Values read from a column as the file holds them, which is not always what Palisade wrote:
 * someone with the file can put text where a time belongs, a BLOB where a name does. A listing that
 * shows such a row must show it (it is often the forged row the reader is looking for), not fail
 * on it: one such row made a whole admin list answer 500, or a CLI listing stop with a stack trace
 * (probes 41d F2, 46b F1, F2).
 */
import { type SQL, sql } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";

/**
 * The first and last instants of the years 0000 to 9999, in ms since 1970: the times a `date-time`
 * (RFC 3339) can write. Date holds more (±271,821 years), written `+010000-…` or `-000001-…`, which
 * no client reading the documented format expects (probe 44a).
 */
export const FIRST_TIME_MS = -62_167_219_200_000;
export const LAST_TIME_MS = 253_402_300_799_999;

/** A time as Palisade writes one: whole ms since 1970 (one before 1970 too: shown as it is). */
export function readableTime(value: unknown): value is number {
  return (
    Number.isSafeInteger(value) &&
    (value as number) >= FIRST_TIME_MS &&
    (value as number) <= LAST_TIME_MS
  );
}

/**
 * Holds for a row whose time in `column` can order a list and name its cursor: one that cannot is
 * left out of the list, since no page after it could be asked for.
 */
export function orderableTime(column: SQLiteColumn): SQL {
  const first = sql.raw(String(FIRST_TIME_MS));
  const last = sql.raw(String(LAST_TIME_MS));
  return sql`(typeof(${column}) = 'integer' AND ${column} BETWEEN ${first} AND ${last})`;
}

/** A time as Palisade writes one, or null for whatever else the file holds there. */
export function timeOrNull(value: unknown): number | null {
  return readableTime(value) ? value : null;
}

/** A stored value as text: a BLOB decoded as UTF-8, a number written out, text and null as they are. */
export function storedValueText(value: unknown): string | null {
  if (value === null || value === undefined || typeof value === "string") return value ?? null;
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  return String(value);
}

/** A stored time in ms as an ISO date, or as the text it holds when it is not one. */
export function storedTimeText(value: unknown): string {
  const date = typeof value === "number" ? new Date(value) : null;
  return date !== null && Number.isFinite(date.getTime())
    ? date.toISOString()
    : (storedValueText(value) ?? "");
}
