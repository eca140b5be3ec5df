/**
 * @module
 * The cursor of a list that pages newest first by (creation time, id): the last item's pair,
 * opaque to clients. Keyset, not an offset: an item added or removed between two pages neither
 * repeats nor skips another.
 */

import { AppError } from "./errors";

export interface ListCursor {
  createdAt: number;
  id: string;
}

export function encodeCursor(createdAt: number, id: string): string {
  return Buffer.from(`${createdAt}.${id}`).toString("base64url");
}

/**
 * The pair a query's `cursor` names, undefined when it has none; a string this API never gave (or
 * naming an id not of the list's kind, `id`) is 422 naming `query/cursor`.
 */
export function cursorOfQuery(cursor: string | undefined, id?: RegExp): ListCursor | undefined {
  if (cursor === undefined) return undefined;
  const decoded = decodeCursor(cursor);
  if (decoded === null || (id !== undefined && !id.test(decoded.id))) {
    throw new AppError("VALIDATION_FAILED", "The cursor is not one this API gave.", [
      { field: "query/cursor", message: "Expected a nextCursor from a previous page" },
    ]);
  }
  return decoded;
}

/** The pair a cursor names; null for a string this API never gave. */
function decodeCursor(cursor: string): ListCursor | null {
  // A time before 1970 is negative: only the file can hold one, and the list still pages past it;
  // so can an id in any spelling (a key row written there), which the list must page past too.
  const match = /^(-?\d{1,16})\.([\s\S]{1,256})$/.exec(
    Buffer.from(cursor, "base64url").toString("utf8"),
  );
  return match ? { createdAt: Number(match[1]), id: match[2]! } : null;
}
