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
  constructor(table: string, stored: unknown, what: "sequence" | "next id" = "sequence") {
    const value = String(stored).slice(0, 40);
    super(
      what === "sequence"
        ? `${table} id sequence (sqlite_sequence) is ${value}, past any id Palisade writes: it was written into the database file; restore the file from a backup`
        : `${table} next id would be ${value}, past any id Palisade writes: its id sequence (sqlite_sequence) was written into the database file; restore the file from a backup`,
    );
    this.name = "IdSequenceError";
  }
}
