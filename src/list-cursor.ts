/**
 * @module
 * The cursor of a list that pages newest first by (creation time, id): the last item's pair,
 * opaque to clients. Keyset, not an offset: an item added or removed between two pages neither
 * repeats nor skips another.
 */

export interface ListCursor {
  createdAt: number;
  id: string;
}

export function encodeCursor(createdAt: number, id: string): string {
  return Buffer.from(`${createdAt}.${id}`).toString("base64url");
}

/** The pair a cursor names; null for a string this API never gave. */
export function decodeCursor(cursor: string): ListCursor | null {
  const match = /^(\d{1,16})\.([A-Za-z0-9_-]{1,64})$/.exec(
    Buffer.from(cursor, "base64url").toString("utf8"),
  );
  return match ? { createdAt: Number(match[1]), id: match[2]! } : null;
}
