/**
 * @module
 * The cursor of a conversation's pages: the id of the oldest message a page showed, opaque to
 * clients. Only the id, which is sealed: a cursor carrying the unsealed time as well was refused
 * by this API when someone changed the time in the file (probe 28a F3).
 */
import { AppError } from "../../errors";

export function encodeMessageCursor(messageId: number): string {
  return Buffer.from(`m${messageId}`).toString("base64url");
}

/**
 * The message id a query's `cursor` names, undefined when it has none; any string but a cursor
 * as this API spells it is 422 naming `query/cursor` (one naming an id the conversation does not
 * hold only sets where the page starts). Any id SQLite can hand out and JavaScript reads exactly is
 * accepted (the turn refuses to write past that: db/id-sequence).
 */
export function messageIdOfCursor(cursor: string | undefined): number | undefined {
  if (cursor === undefined) return undefined;
  const match = /^m(\d{1,16})$/.exec(Buffer.from(cursor, "base64url").toString("utf8"));
  const id = match ? Number(match[1]) : Number.NaN;
  // Exactly as given: base64url decoding skips what it cannot read (padding, stray characters).
  if (!Number.isSafeInteger(id) || encodeMessageCursor(id) !== cursor) {
    throw new AppError("VALIDATION_FAILED", "The cursor is not one this API gave.", [
      { field: "query/cursor", message: "Expected a nextCursor from a previous page" },
    ]);
  }
  return id;
}
