/**
 * @module
 * The columns of a conversation or message its seal does not cover (history-seal.ts) that are
 * shown: the times, and a message's usage. Palisade writes a time as whole milliseconds since
 * 1970 and a token count as a whole number of tokens; what the file holds as anything else (text,
 * a BLOB, a fraction, a time outside the years 0000 to 9999, a negative count) was written there by
 * someone else. A time before 1970 is one still, and shown as such.
 *
 * Such a time cannot be shown at all (`toISOString` throws): one made the owner's whole list and
 * the conversation's page answer 500, and cut every export of theirs at the same place (probes
 * 42b F3, 43b F1). So a conversation whose time, or a message whose time, is not one reads as
 * tampered, as one failing its seal does. A usage that is not a count is shown as no usage (`null`,
 * as for a message whose usage was never known), on the page and in the export alike (43b F2: the
 * page answered 500 and the export wrote the text as it stood), and a day's usage count that is not
 * one is exported as none too (44a F3).
 */

import { type SQL, sql } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";
import { orderableTime, readableTime } from "../../db/stored-values";

export { orderableTime, readableTime };

/**
 * Holds for a row whose id a list cursor can name and the next page find again: text of 1 to 64
 * bytes of letters, digits, `-` and `_` (Palisade's are 22 base64url characters). A row written into the file with
 * a longer id, an empty one or a BLOB made the owner's list stop at it, 422 for its own cursor
 * (probe 47a F1), and one with a NUL (SQLite's `length` stops there) or bytes that are no UTF-8 (read
 * back as U+FFFD, which names no row) did too, or returned the same empty page forever (48a F2):
 * it is left out, as a row whose time is none is. Counted in bytes, and checked for any other byte.
 */
export function cursorableId(column: SQLiteColumn): SQL {
  return sql`(typeof(${column}) = 'text' AND length(CAST(${column} AS BLOB)) BETWEEN 1 AND 64 AND ${column} NOT GLOB '*[^0-9A-Za-z_-]*' AND instr(CAST(${column} AS BLOB), X'00') = 0)`;
}

/** A count (of tokens, of requests) as Palisade writes one. */
export function readableCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** A conversation's row as read to be checked: what its seal covers, and its times. */
export interface StoredConversation {
  id: string;
  ownerKind: string;
  ownerId: string;
  seal: string | null;
  createdAt: unknown;
  updatedAt: unknown;
}

/** Whether a conversation's times are times. */
export function readableConversation(row: { createdAt: unknown; updatedAt: unknown }): boolean {
  return readableTime(row.createdAt) && readableTime(row.updatedAt);
}

/** Whether every message's time is a time. */
export function readableMessages(rows: readonly { createdAt: unknown }[]): boolean {
  return rows.every((row) => readableTime(row.createdAt));
}

/** A message's usage as shown: null unless both counts are counts. */
export function shownUsage(row: {
  promptTokens: unknown;
  completionTokens: unknown;
}): { promptTokens: number; completionTokens: number } | null {
  const { promptTokens, completionTokens } = row;
  return readableCount(promptTokens) && readableCount(completionTokens)
    ? { promptTokens, completionTokens }
    : null;
}

/** Whether a message's usage holds what no count can be (absent, `null`, is none known). */
export function unreadableUsage(row: {
  promptTokens: unknown;
  completionTokens: unknown;
}): boolean {
  const { promptTokens, completionTokens } = row;
  return (
    (promptTokens !== null && !readableCount(promptTokens)) ||
    (completionTokens !== null && !readableCount(completionTokens))
  );
}
