/**
 * @module
 * A table's AUTOINCREMENT sequence (`sqlite_sequence`) as Palisade reads it to give rows their ids
 * itself: the audit log and the chat messages, each inserting rows whose ids are in their seals.
 */
import type { Database } from "bun:sqlite";

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

/** A stored id or sequence: as SQLite reads it for ids (`CAST(… AS INTEGER)`), and as text. */
interface StoredId {
  asInteger: number | null;
  stored: string | null;
}

const STORED_ID = (value: string) =>
  `CAST(${value} AS INTEGER) AS asInteger, CAST(${value} AS TEXT) AS stored`;

/**
 * Whether `table`'s ids are spent, and by what, named as the file holds it (`named`: "the audit
 * log's", as an operator reads it). SQLite goes on from the larger of the table's id sequence and
 * its largest id as it reads them (`CAST(… AS INTEGER)`: a text that is not a number is 0, an
 * infinite or huge REAL the largest id), so a row written at the last id spends them whatever the
 * sequence says, and a sequence of `1e999` or `'+9223372036854775807'` does too (probes 58e F1,
 * 58f F1, F2). Null when neither is past what JavaScript counts exactly. Read on a failure only.
 */
export function spentIdsIn(
  sqlite: Database,
  table: string,
  named: string,
  idColumn = "id",
): IdSequenceError | null {
  const sequence = sqlite
    .query<StoredId, [string]>(`SELECT ${STORED_ID("seq")} FROM sqlite_sequence WHERE name = ?`)
    .get(table);
  const largestId = sqlite
    .query<StoredId, []>(`SELECT ${STORED_ID(`max(${idColumn})`)} FROM "${table}"`)
    .get();
  const read = (id: StoredId | null) => id?.asInteger ?? 0;
  const spends = (value: number) => value + 2 > Number.MAX_SAFE_INTEGER;
  const [fromSequence, fromRow] = [read(sequence), read(largestId)];
  if (spends(fromSequence) && fromSequence >= fromRow) {
    return new IdSequenceError(named, sequence?.stored);
  }
  if (spends(fromRow)) return new IdSequenceError(named, largestId?.stored, "largest id");
  return null;
}
