/**
 * @module
 * Writes that would each be an IMMEDIATE transaction of their own, committed together: those queued
 * in one event-loop turn run at the next in one transaction, each in a savepoint of its own.
 *
 * Why: a commit writes every page its transaction changed to the WAL, two `pwrite`s a page, and
 * consecutive writes of one kind change the same pages (a table's newest rows, the ends of its
 * indexes). A chat turn stores ~10 such pages; committed one turn at a time the begin and commit
 * were a third of a turn's CPU on `POST /api/chat`. Committed together, those pages are written once
 * for the group: with its reservations and its storing grouped, `POST /api/chat` went from 3.3k to
 * 4.7k turns a second over HTTP here (301 → 214 µs of CPU a turn), and a turn alone in its
 * event-loop turn costs what it did. (The limiter groups its decisions the same way, in its own queue:
 * plugins/rate-limit/coalesce.)
 *
 * Each write still succeeds or fails alone: one that throws has its savepoint rolled back and its
 * caller gets its error; the others go on. What fails the transaction itself (the write lock not
 * taken within the connection's busy timeout, a COMMIT that fails: a full disk, a deferred
 * constraint) fails every write of it, none of them kept, as each would have failed alone. A write
 * whose failure made SQLite roll back the whole transaction (some I/O and full-disk errors, a
 * trigger's RAISE(ROLLBACK)) fails alone too: the others, undone with it, are run again without
 * it, RETRY_GAP_MS later. (So a write must not end the transaction itself, and what it does
 * outside the database must bear being done twice.) A
 * caller's promise settles only once its write is committed or known lost, so an answer given
 * after it never names a row that is not there. The price is one event-loop turn of waiting: a
 * chat turn's reservation and its storing pay it, which is nothing beside a provider's answer.
 */
import type { Database } from "bun:sqlite";

/** Writes in one transaction at most; the rest wait for the next turn's, so the lock is never held long. */
export const MAX_WRITES_PER_TRANSACTION = 64;

/**
 * How long the writes of a group whose transaction one write ended wait before they run again.
 * Not at once: a write refused that way again and again (a trigger on one owner's rows) would
 * take the lock back round after round, and another process, whose wait for it polls every few
 * milliseconds for at most REQUEST_BUSY_TIMEOUT_MS, would miss every gap and fail its own group.
 */
export const RETRY_GAP_MS = 10;

export interface GroupedWrites {
  /**
   * Runs `write` (synchronous: bun:sqlite's statements are) in the next group's transaction;
   * resolves with its value once that has committed, rejects with its own error or the group's.
   */
  run<T>(write: () => T): Promise<T>;
}

interface Queued {
  write: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** The write at `index` failed in a way that made SQLite roll back the whole transaction. */
class TransactionEnded {
  constructor(
    readonly index: number,
    readonly error: unknown,
  ) {}
}

export function groupedWrites(
  sqlite: Database,
  maxPerTransaction = MAX_WRITES_PER_TRANSACTION,
): GroupedWrites {
  let queue: Queued[] = [];
  // The next flush: at the next event-loop turn, or RETRY_GAP_MS after a round one write ended.
  let immediate: ReturnType<typeof setImmediate> | null = null;
  let timer: Timer | null = null;
  // bun:sqlite runs a transaction function called inside another as a savepoint, rolled back (and
  // its error rethrown) when it throws; the outer one commits, or rolls back and rethrows.
  const inSavepoint = sqlite.transaction((write: () => unknown) => write());
  const group = sqlite.transaction((writes: readonly Queued[]): Outcome[] => {
    // Alone, a write needs no savepoint: should it throw, the transaction is rolled back (only
    // its own writes were in it) and its error is the group's.
    if (writes.length === 1) return [{ ok: true, value: writes[0]!.write() }];
    const outcomes: Outcome[] = [];
    for (const [index, queued] of writes.entries()) {
      try {
        outcomes.push({ ok: true, value: inSavepoint(queued.write) });
      } catch (error) {
        // SQLite ended the whole transaction (some I/O and full-disk errors roll it back, and so
        // does a trigger's RAISE(ROLLBACK)): the writes before this one are undone with it, and
        // one after would run outside any transaction, committing alone. Stop here.
        if (!sqlite.inTransaction) throw new TransactionEnded(index, error);
        outcomes.push({ ok: false, error });
      }
    }
    return outcomes;
  });

  const flush = () => {
    immediate = null;
    timer = null;
    const writes = queue.length > maxPerTransaction ? queue.slice(0, maxPerTransaction) : queue;
    queue = queue.length > maxPerTransaction ? queue.slice(maxPerTransaction) : [];
    if (queue.length > 0) schedule();
    let outcomes: Outcome[];
    try {
      outcomes = group.immediate(writes);
    } catch (error) {
      // (Only a group of several writes throws this: a write alone is not in a savepoint.)
      if (error instanceof TransactionEnded) {
        // That write alone fails; the others, undone with it or never run, go again first,
        // without it. Each round takes one write out, so it ends.
        writes[error.index]!.reject(error.error);
        queue = [...writes.filter((_, index) => index !== error.index), ...queue];
        scheduleAfterGap();
        return;
      }
      for (const queued of writes) queued.reject(error);
      return;
    }
    outcomes.forEach((outcome, index) => {
      const queued = writes[index]!;
      if (outcome.ok) queued.resolve(outcome.value);
      else queued.reject(outcome.error);
    });
  };
  const schedule = () => {
    if (immediate === null && timer === null) immediate = setImmediate(flush);
  };
  // Whatever was due at once waits with the retried writes: the queue runs in order.
  const scheduleAfterGap = () => {
    if (immediate !== null) clearImmediate(immediate);
    immediate = null;
    timer ??= setTimeout(flush, RETRY_GAP_MS);
  };

  return {
    run<T>(write: () => T): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push({ write, resolve: resolve as (value: unknown) => void, reject });
        schedule();
      });
    },
  };
}
