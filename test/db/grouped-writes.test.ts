/**
 * Writes queued in one event-loop turn are committed together, each in its own savepoint: a write
 * that throws loses only itself, what ends the transaction loses every write of it, and a caller
 * hears its write committed only when its row is there for everyone to read.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { openDatabase } from "../../src/db/client";
import { groupedWrites, RETRY_GAP_MS } from "../../src/db/grouped-writes";
import { cleanupsAfterEach, tempDatabaseFile } from "../support/cleanups";

const cleanups = cleanupsAfterEach();

/** A WAL database file with a table `t`, and a second connection to it (another reader). */
function twoConnections() {
  const path = tempDatabaseFile(cleanups);
  const db = openDatabase(path);
  const sqlite = db.$client;
  sqlite.run("CREATE TABLE t (n INTEGER PRIMARY KEY, note TEXT)");
  const other = new Database(path);
  other.run("PRAGMA busy_timeout = 0");
  cleanups.push(() => {
    other.close();
    sqlite.close();
  });
  const rowsSeenBy = (connection: Database) =>
    (connection.query("SELECT n FROM t ORDER BY n").all() as { n: number }[]).map((row) => row.n);
  return { path, sqlite, other, rowsSeenBy };
}

/** Each promise's outcome, without letting a rejection go unhandled. */
const settled = (promises: Promise<unknown>[]) => Promise.allSettled(promises);

test("writes queued in one turn commit together: none is visible to another connection before the last has run", async () => {
  const { sqlite, other, rowsSeenBy } = twoConnections();
  const writes = groupedWrites(sqlite);
  const seenByOtherDuringGroup: number[][] = [];
  const insert = (n: number) => () => {
    sqlite.run("INSERT INTO t (n) VALUES (?)", [n]);
    seenByOtherDuringGroup.push(rowsSeenBy(other));
    return n;
  };
  const values = await Promise.all([
    writes.run(insert(1)),
    writes.run(insert(2)),
    writes.run(insert(3)),
  ]);
  expect(values).toEqual([1, 2, 3]);
  // Inside the group another connection saw none of them: one transaction, not three.
  expect(seenByOtherDuringGroup).toEqual([[], [], []]);
  expect(rowsSeenBy(other)).toEqual([1, 2, 3]);
});

test("a write that throws loses only its own rows; the others are committed and hear so", async () => {
  const { sqlite, other, rowsSeenBy } = twoConnections();
  const writes = groupedWrites(sqlite);
  const outcomes = await settled([
    writes.run(() => sqlite.run("INSERT INTO t (n) VALUES (1)")),
    writes.run(() => {
      sqlite.run("INSERT INTO t (n) VALUES (2)");
      throw new Error("the second write failed after its insert");
    }),
    // A constraint error of SQLite's own, after the first write's row: only this one fails.
    writes.run(() => sqlite.run("INSERT INTO t (n) VALUES (1)")),
    writes.run(() => sqlite.run("INSERT INTO t (n) VALUES (4)")),
  ]);
  expect(outcomes.map((outcome) => outcome.status)).toEqual([
    "fulfilled",
    "rejected",
    "rejected",
    "fulfilled",
  ]);
  expect(String((outcomes[1] as PromiseRejectedResult).reason)).toContain("second write failed");
  expect(String((outcomes[2] as PromiseRejectedResult).reason)).toContain("UNIQUE");
  expect(rowsSeenBy(other)).toEqual([1, 4]);
});

test("a write alone in its turn that throws leaves nothing; the next is committed", async () => {
  const { sqlite, other, rowsSeenBy } = twoConnections();
  const writes = groupedWrites(sqlite);
  const failed = writes.run(() => {
    sqlite.run("INSERT INTO t (n) VALUES (1)");
    throw new Error("failed after its insert");
  });
  await expect(failed).rejects.toThrow("failed after its insert");
  expect(sqlite.inTransaction).toBe(false);
  expect(rowsSeenBy(other)).toEqual([]);
  expect(await writes.run(() => sqlite.run("INSERT INTO t (n) VALUES (2)").changes)).toBe(1);
  expect(rowsSeenBy(other)).toEqual([2]);
});

test("the write lock not taken: every write of the group fails and none ran", async () => {
  const { sqlite, other, rowsSeenBy } = twoConnections();
  sqlite.run("PRAGMA busy_timeout = 0");
  const writes = groupedWrites(sqlite);
  other.run("BEGIN IMMEDIATE");
  let ran = 0;
  const outcomes = await settled([
    writes.run(() => {
      ran++;
      sqlite.run("INSERT INTO t (n) VALUES (1)");
    }),
    writes.run(() => {
      ran++;
      sqlite.run("INSERT INTO t (n) VALUES (2)");
    }),
  ]);
  other.run("COMMIT");
  expect(outcomes.map((outcome) => outcome.status)).toEqual(["rejected", "rejected"]);
  expect(String((outcomes[0] as PromiseRejectedResult).reason)).toContain("locked");
  expect(ran).toBe(0);
  expect(rowsSeenBy(other)).toEqual([]);
  // The next group takes the lock as usual.
  await writes.run(() => sqlite.run("INSERT INTO t (n) VALUES (3)"));
  expect(rowsSeenBy(other)).toEqual([3]);
});

test("a COMMIT that fails loses every write of the group, those whose own part went well too", async () => {
  const { sqlite, other, rowsSeenBy } = twoConnections();
  sqlite.run("PRAGMA foreign_keys = ON");
  sqlite.run("CREATE TABLE child (parent INTEGER REFERENCES t(n) DEFERRABLE INITIALLY DEFERRED)");
  const writes = groupedWrites(sqlite);
  const outcomes = await settled([
    writes.run(() => sqlite.run("INSERT INTO t (n) VALUES (1)")),
    // Checked only at COMMIT: a child whose parent does not exist.
    writes.run(() => sqlite.run("INSERT INTO child (parent) VALUES (99)")),
    writes.run(() => sqlite.run("INSERT INTO t (n) VALUES (3)")),
  ]);
  expect(outcomes.map((outcome) => outcome.status)).toEqual(["rejected", "rejected", "rejected"]);
  for (const outcome of outcomes) {
    expect(String((outcome as PromiseRejectedResult).reason)).toContain("FOREIGN KEY");
  }
  expect(rowsSeenBy(other)).toEqual([]);
  expect(sqlite.inTransaction).toBe(false);
});

test("a write whose failure makes SQLite end the whole transaction fails alone; the others run again and are committed", async () => {
  const { sqlite, other, rowsSeenBy } = twoConnections();
  const writes = groupedWrites(sqlite);
  const runs = [0, 0, 0];
  let seenInTheGap: number[] = [];
  let endedAt = 0;
  let ranAgainAt = 0;
  const first = writes.run(() => {
    runs[0]!++;
    if (runs[0] === 2) ranAgainAt = performance.now();
    sqlite.run("INSERT INTO t (n) VALUES (1)");
  });
  // As SQLite does on some I/O and full-disk errors, and a trigger's RAISE(ROLLBACK) on purpose:
  // the whole transaction rolled back, the first write's row with it.
  const ending = writes.run(() => {
    runs[1]!++;
    sqlite.run("ROLLBACK");
  });
  // Between the two rounds the lock is free for another process: one that waits for it (polling
  // every few ms) is not locked out by round after round. Taken as soon as the failed write hears
  // it, before the round runs again: a turn later, on a loaded machine, the gap had passed.
  let retriedBeforeTheGap: number[] = [];
  ending.catch(() => {
    endedAt = performance.now();
    retriedBeforeTheGap = [...runs];
    other.run("BEGIN IMMEDIATE");
    other.run("INSERT INTO t (n) VALUES (99)");
    other.run("COMMIT");
    seenInTheGap = rowsSeenBy(other);
  });
  const outcomes = await settled([
    first,
    ending,
    writes.run(() => {
      runs[2]!++;
      sqlite.run("INSERT INTO t (n) VALUES (3)");
    }),
  ]);
  expect(outcomes.map((outcome) => outcome.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
  // The first ran again (its row had gone with the transaction); the third ran once, in the second
  // transaction; the one that ended the first never ran again.
  expect(runs).toEqual([2, 1, 1]);
  // In the gap: the first write had run once, and the third not yet.
  expect(retriedBeforeTheGap).toEqual([1, 1, 0]);
  expect(seenInTheGap).toEqual([99]);
  // And the round ran again only after the gap (a timer never fires early; 1 ms for its rounding).
  expect(ranAgainAt - endedAt).toBeGreaterThanOrEqual(RETRY_GAP_MS - 1);
  expect(rowsSeenBy(other)).toEqual([1, 3, 99]);
  expect(sqlite.inTransaction).toBe(false);
});

test("on a full database, a write hears it committed exactly when its row is there", async () => {
  const { sqlite, other, rowsSeenBy } = twoConnections();
  const writes = groupedWrites(sqlite);
  const pages = (sqlite.query("PRAGMA page_count").get() as { page_count: number }).page_count;
  sqlite.run(`PRAGMA max_page_count = ${pages + 2}`);
  const note = "x".repeat(1500);
  const attempts = Array.from({ length: 12 }, (_, index) =>
    writes.run(() => sqlite.run("INSERT INTO t (n, note) VALUES (?, ?)", [index + 1, note])),
  );
  const outcomes = await settled(attempts);
  const committed = outcomes.flatMap((outcome, index) =>
    outcome.status === "fulfilled" ? [index + 1] : [],
  );
  // The file filled up part of the way through: some writes failed.
  expect(committed.length).toBeLessThan(12);
  expect(
    outcomes.some((outcome) => String((outcome as PromiseRejectedResult).reason).includes("full")),
  ).toBe(true);
  expect(rowsSeenBy(other)).toEqual(committed);
});

test("more writes than one transaction holds are all committed, over several transactions", async () => {
  const { sqlite, other, rowsSeenBy } = twoConnections();
  const writes = groupedWrites(sqlite, 4);
  const transactionsSeen = new Set<number>();
  let transaction = 0;
  const outcomes = await Promise.all(
    Array.from({ length: 10 }, (_, index) =>
      writes.run(() => {
        // A new transaction starts where another connection's view changes: count them by it.
        const seen = rowsSeenBy(other).length;
        if (!transactionsSeen.has(seen)) {
          transactionsSeen.add(seen);
          transaction++;
        }
        sqlite.run("INSERT INTO t (n) VALUES (?)", [index + 1]);
        return transaction;
      }),
    ),
  );
  expect(outcomes).toEqual([1, 1, 1, 1, 2, 2, 2, 2, 3, 3]);
  expect(rowsSeenBy(other)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});
