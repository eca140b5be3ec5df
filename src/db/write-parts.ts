/**
 * @module
 * Writes a start makes to many rows (an upgrade's keys, readings), in short write transactions
 * with a pause between two, so that every other process on the file gets the lock meanwhile. A
 * start is synchronous, so the pause holds this process only.
 *
 * The serving process waits REQUEST_BUSY_TIMEOUT_MS (50 ms) for a write lock, trying again as
 * SQLite's busy handler sleeps (after 1, 2, 5, 10, 15 and 20 ms: never more than 17 ms between two
 * tries in that wait). A part that ends within PART_BUDGET_MS and a pause longer than those gaps
 * let a writer that starts waiting at any time in through the pause (probe 94a F2: parts of 500
 * rows held the lock 107 ms each on a busy machine, and the pause of 10 ms fell between two tries:
 * the running service answered 503 through the whole upgrade). The budget leaves room for the
 * commit and for a part the scheduler holds up (94d F4: at 20 ms, with the machine's load at
 * three times its cores, 1.5 % of a waiting writer's tries still failed); a machine loaded past
 * that can still hold a part past the wait. The cost: writing a third of the time, a large
 * upgrade's start takes about three times its writing.
 */
import type { Database } from "bun:sqlite";

/** The longest a part writes for before it commits (a whole row past it: rows are not split). */
export const PART_BUDGET_MS = 15;

/** The pause between two parts: longer than the gaps between a waiting writer's tries. */
export const PART_PAUSE_MS = 30;

/** The most rows one part writes, however fast. */
const PART_ROWS = 500;

/**
 * `write` for each item, in immediate transactions of at most PART_BUDGET_MS (and PART_ROWS rows),
 * PART_PAUSE_MS apart. `now` is the clock parts are timed by (tests give their own).
 */
export function inWriteParts<T>(
  sqlite: Database,
  items: readonly T[],
  write: (item: T) => void,
  now: () => number = () => performance.now(),
): void {
  let at = 0;
  while (at < items.length) {
    if (at > 0) Bun.sleepSync(PART_PAUSE_MS);
    at = sqlite.transaction((from: number) => writePart(items, from, write, now)).immediate(at);
  }
}

/**
 * `write` for each item as inWriteParts writes them, while the process serves: the pause between
 * two parts is an event-loop turn's sleep, so requests are answered meanwhile. Each part first
 * asks `keepGoing` inside its transaction, where no other process can write: once it says no, no
 * further part is written. Resolves to whether every item was written.
 */
export async function inWritePartsWhileServing<T>(
  sqlite: Database,
  items: readonly T[],
  write: (item: T) => void,
  keepGoing: () => boolean,
  now: () => number = () => performance.now(),
): Promise<boolean> {
  let at = 0;
  while (at < items.length) {
    if (at > 0) await Bun.sleep(PART_PAUSE_MS);
    const next = sqlite
      .transaction((from: number) => (keepGoing() ? writePart(items, from, write, now) : null))
      .immediate(at);
    if (next === null) return false;
    at = next;
  }
  return true;
}

/** One part from `from`, inside its transaction: returns where the next part starts. */
function writePart<T>(
  items: readonly T[],
  from: number,
  write: (item: T) => void,
  now: () => number,
): number {
  const started = now();
  let next = from;
  do {
    write(items[next] as T);
    next++;
  } while (next < items.length && next - from < PART_ROWS && now() - started < PART_BUDGET_MS);
  return next;
}
