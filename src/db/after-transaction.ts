/**
 * @module
 * Work that must wait for the end of the transaction it was done in: rows read or written inside a
 * caller's transaction are undone with it if it rolls back, at its COMMIT too (a full disk), and
 * only once it has ended can one tell. Transactions here never span an await (bun:sqlite's are
 * synchronous), so by the next microtask the caller's has ended; if another has begun by then,
 * the check waits a turn.
 */
import type { Database } from "bun:sqlite";

/**
 * Runs `then` once `sqlite` is outside any transaction. If the database is closed first (a CLI
 * command that failed and ended), `closed` is told instead, with the error, and `then` never runs.
 */
export function afterTransaction(
  sqlite: Database,
  then: () => void,
  closed: (error: unknown) => void = () => {},
): void {
  const check = () => {
    try {
      if (sqlite.inTransaction) {
        setImmediate(check);
        return;
      }
      then();
    } catch (error) {
      closed(error);
    }
  };
  queueMicrotask(check);
}
