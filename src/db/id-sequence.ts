/**
 * @module
 * A table's AUTOINCREMENT sequence (`sqlite_sequence`) as Palisade reads it to give rows their ids
 * itself: the audit log and the chat messages, each inserting rows whose ids are in their seals.
 */

/**
 * The sequence holds what no Palisade write leaves (past what JavaScript counts exactly, or not a
 * number): it was written into the database file, and ids read back would not be the ones stored.
 * `table` names the rows, as an operator reads it ("the audit log's", "the chat messages'");
 * `stored` is the value as the file holds it, read as text by SQLite (past 2^53 a number read
 * from it is rounded, and the message would name a value the file does not hold: probe 52a F3).
 * `what` says whether it is the sequence itself or the id the refused insert was given by it.
 */
export class IdSequenceError extends Error {
  constructor(
    table: string,
    stored: unknown,
    what: "sequence" | "next id" | "largest id" = "sequence",
  ) {
    const value = String(stored).slice(0, 40);
    super(
      what === "sequence"
        ? `${table} id sequence (sqlite_sequence) is ${value}, past any id Palisade writes: it was written into the database file; restore the file from a backup`
        : what === "next id"
          ? `${table} next id would be ${value}, past any id Palisade writes: its id sequence (sqlite_sequence) was written into the database file; restore the file from a backup`
          : `${table} largest id is ${value}, past any id Palisade writes: a row was written there into the database file, and ids go on from it whatever the id sequence says; restore the file from a backup`,
    );
    this.name = "IdSequenceError";
  }
}

/**
 * Which of a table's id sequence and largest id, each as the file holds it (text), spends the ids:
 * SQLite goes on from the larger, so a row written at the last id spends them whatever the
 * sequence says (probe 58e F1: the message named a sequence of 5). Null when neither is past what
 * JavaScript counts exactly; a value that is not a whole number is not the cause.
 */
export function spentIds(
  table: string,
  sequence: string | null | undefined,
  largestId: string | null | undefined,
): IdSequenceError | null {
  const spent = (value: string | null | undefined): value is string =>
    value != null && /^-?\d+$/.test(value) && !Number.isSafeInteger(Number(value) + 2);
  if (spent(sequence)) return new IdSequenceError(table, sequence);
  if (spent(largestId)) return new IdSequenceError(table, largestId, "largest id");
  return null;
}
