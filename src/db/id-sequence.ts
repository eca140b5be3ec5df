/**
 * @module
 * A table's AUTOINCREMENT sequence (`sqlite_sequence`) as Palisade reads it to give rows their ids
 * itself: the audit log and the chat messages, each inserting rows whose ids are in their seals.
 */

/**
 * The sequence holds what no Palisade write leaves (past what JavaScript counts exactly, or not a
 * number): it was written into the database file, and ids read back would not be the ones stored.
 * `table` names the rows, as an operator reads it ("the audit log's", "the chat messages'").
 */
export class IdSequenceError extends Error {
  constructor(table: string, sequence: unknown) {
    super(
      `${table} id sequence (sqlite_sequence) is ${String(sequence).slice(0, 40)}, past any id Palisade writes: it was written into the database file; restore the file from a backup`,
    );
    this.name = "IdSequenceError";
  }
}
