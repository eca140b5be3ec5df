import { afterEach, describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { type AppDatabase, openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import { tempDir } from "../../support/app";
import { waitFor } from "../../support/wait";
import { limiterStoreContract, minuteStart, policy } from "./store-contract";
import { sqliteEstimate } from "./stored-estimate";

// Two stores on two connections to one file: what two processes of one VM share.
limiterStoreContract("SqliteLimiterStore", () => {
  const dir = tempDir();
  const path = join(dir.path, "limits.db");
  const dbs = [openDatabase(path), openDatabase(path)] as const;
  applyMigrations(dbs[0]);
  const stores = dbs.map((db) => new SqliteLimiterStore({ sqlite: db.$client }));
  return {
    stores: [stores[0]!, stores[1]!],
    estimate: sqliteEstimate(dbs[0].$client),
    close() {
      for (const store of stores) store.close();
      for (const db of dbs) db.$client.close();
      dir.remove();
    },
  };
});

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanup.reverse()) fn();
  cleanup = [];
});

function freshStore(): { store: SqliteLimiterStore; db: AppDatabase; path: string } {
  const dir = tempDir();
  const path = join(dir.path, "limits.db");
  const db = openDatabase(path);
  applyMigrations(db);
  const store = new SqliteLimiterStore({ sqlite: db.$client });
  cleanup.push(() => {
    db.$client.close();
    dir.remove();
  });
  return { store, db, path };
}

/** Inserts a counter row for `key` expiring at `expiresAt`, as the store would have left it. */
function counterInserter(db: AppDatabase) {
  const statement = db.$client.prepare(
    `INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
      burst_window_start, burst_current, burst_previous, admitted, expires_at)
     VALUES ('p', ?1, 0, 1, 0, 0, 1, 0, 1, ?2)`,
  );
  return { run: (key: string, expiresAt: number) => statement.run(key, expiresAt) };
}

describe("SqliteLimiterStore: its table", () => {
  test("concurrent checks are one statement: the row counts exactly the admitted ones", async () => {
    const { store, db } = freshStore();
    const now = minuteStart() + 1_000;
    const outcomes = await Promise.all(
      Array.from({ length: 80 }, () => store.check([{ policy: policy(50), key: "k", now }])),
    );
    expect(outcomes.filter(([o]) => o!.admitted)).toHaveLength(50);
    const row = db.$client
      .query("SELECT current, admitted FROM rate_limit_counters WHERE key = 'k'")
      .get() as { current: number; admitted: number };
    // The 80 concurrent checks were one statement asking for 80 permits; it granted 50.
    expect(row).toEqual({ current: 50, admitted: 50 });
  });

  // The windows a check is told are worked out beside the write, not read back from the row: they
  // must be what the row now holds, whether it was new, current, one window behind or older.
  test("each check is told the windows its row now holds, from every kind of stored row, in a group or alone", async () => {
    const { store, db } = freshStore();
    const now = minuteStart() + 6_000;
    const w = 60_000;
    const burst = now - (now % 10_000);
    const insert = db.$client.prepare(
      `INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
        burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
       VALUES ('test', ?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8)`,
    );
    // [window start, current, previous, burst window start, burst current, burst previous]
    const stored: Record<string, number[] | null> = {
      fresh: null,
      current: [minuteStart(), 4, 5, burst, 2, 1],
      full: [minuteStart(), 4, 9, burst, 2, 1],
      behind: [minuteStart() - w, 6, 3, burst - 10_000, 5, 7],
      older: [minuteStart() - 2 * w, 8, 8, burst - 20_000, 8, 8],
    };
    for (const [key, row] of Object.entries(stored)) {
      if (row !== null)
        insert.run(
          key,
          ...(row as [number, number, number, number, number, number]),
          now + 120_000,
        );
    }
    const read = db.$client.query<
      Record<
        | "window_start"
        | "previous"
        | "current"
        | "burst_window_start"
        | "burst_previous"
        | "burst_current"
        | "admitted",
        number
      >,
      [string]
    >(
      `SELECT window_start, previous, current, burst_window_start, burst_previous, burst_current,
        admitted FROM rate_limit_counters WHERE key = ?1`,
    );
    for (const key of Object.keys(stored)) {
      // Five at once against a limit of 12: some keys have room for all, some for a few, one for none.
      const outcomes = await Promise.all(
        Array.from({ length: 5 }, () => store.check([{ policy: policy(12, 12), key, now }])),
      );
      const row = read.get(key)!;
      const admitted = outcomes.filter(([o]) => o!.admitted).length;
      expect({ key, admitted }).toEqual({ key, admitted: row.admitted });
      // The last check sees the count after every permit of the group (the first admitted ones
      // count down to it, one by one).
      const last = outcomes[outcomes.length - 1]![0]!;
      expect({ key, ...last }).toEqual({
        key,
        windowStart: row.window_start,
        previous: row.previous,
        current: row.current,
        burstWindowStart: row.burst_window_start,
        burstPrevious: row.burst_previous,
        burstCurrent: row.burst_current,
        admitted: admitted === 5,
      });
    }
    // A request alone in its turn is handed the decision's own outcome: the same fields, no others.
    const [alone, again] = [
      await store.check([{ policy: policy(12, 12), key: "behind", now }]),
      await store.check([{ policy: policy(12, 12), key: "full", now }]),
    ];
    expect(alone).toEqual([
      {
        windowStart: minuteStart(),
        previous: 6,
        current: 6,
        burstWindowStart: burst,
        burstPrevious: 5,
        burstCurrent: 6,
        admitted: true,
      },
    ]);
    expect(again).toEqual([
      {
        windowStart: minuteStart(),
        previous: 9,
        current: 4,
        burstWindowStart: burst,
        burstPrevious: 1,
        burstCurrent: 2,
        admitted: false,
      },
    ]);
    const rows = db.$client
      .query(
        "SELECT key, current, previous, burst_current, burst_previous FROM rate_limit_counters ORDER BY key",
      )
      .all();
    expect(rows).toEqual([
      // One window behind: its current count is now the previous one.
      // 6 s into the minute: 6 × 0.9 + 0 leaves room for all 5 (the burst: 5 × 0.4), then the one alone.
      { key: "behind", current: 6, previous: 6, burst_current: 6, burst_previous: 5 },
      // 5 × 0.9 + 4 = 8.5 leaves room for 3 of the 5.
      { key: "current", current: 7, previous: 5, burst_current: 5, burst_previous: 1 },
      { key: "fresh", current: 5, previous: 0, burst_current: 5, burst_previous: 0 },
      // 9 × 0.9 + 4 = 12.1: none.
      { key: "full", current: 4, previous: 9, burst_current: 2, burst_previous: 1 },
      { key: "older", current: 5, previous: 0, burst_current: 5, burst_previous: 0 },
    ]);
  });

  // Someone with the file but no secrets may write anything into a row: it must count as no more
  // than a new row would (deleting the row is what they could do anyway), and fail no other check.
  test("a row edited to hold text, negative, fractional or infinite counts counts as a new row and fails no other check of its group", async () => {
    const { store, db } = freshStore();
    const now = minuteStart() + 6_000;
    const burst = now - (now % 10_000);
    const tampered: Record<string, string> = {
      text: "'abc'",
      negative: "-1000000",
      infinite: "-9e999",
      int64: "-9223372036854775808",
      fractional: "-0.5",
      blob: "x'00ff'",
    };
    for (const [key, value] of Object.entries(tampered)) {
      db.$client.run(
        `INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
          burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
         VALUES ('test', '${key}', ${minuteStart()}, ${value}, ${value}, ${burst}, ${value},
           ${value}, 0, ${now + 120_000}, ${now + 120_000})`,
      );
    }
    const keys = [...Object.keys(tampered), "bystander"];
    // One group: every key's checks arrive in the same event-loop turn.
    const outcomes = await Promise.all(
      keys.flatMap((key) =>
        Array.from({ length: 15 }, () =>
          store.check([{ policy: policy(10, 10), key, now }]).then(([o]) => ({ key, o: o! })),
        ),
      ),
    );
    const admittedOf = (key: string) =>
      outcomes.filter((each) => each.key === key && each.o.admitted).length;
    for (const key of keys)
      expect({ key, admitted: admittedOf(key) }).toEqual({ key, admitted: 10 });
    for (const { o } of outcomes) {
      for (const value of [o.previous, o.current, o.burstPrevious, o.burstCurrent]) {
        expect(Number.isSafeInteger(value) && value >= 0).toBe(true);
      }
    }
    const rows = db.$client
      .query(
        "SELECT key, current, previous, burst_current, burst_previous FROM rate_limit_counters ORDER BY key",
      )
      .all();
    expect(rows).toEqual(
      [...keys]
        .sort()
        .map((key) => ({ key, current: 10, previous: 0, burst_current: 10, burst_previous: 0 })),
    );
  });

  // A check can be decided a while after it arrived (a busy lock, the backlog), by which time
  // another process may have counted the key in the next window.
  test("a row written into the file at rowid 2^53 does not stop the counting of the rows after it, whose rowids a JS number cannot hold (probe 50a F2)", async () => {
    const { store, db } = freshStore();
    // A row at 2^53: the next rows are 2^53 + 1 (read as 2^53 by JavaScript, whose numbers cannot
    // hold it), 2^53 + 2. (With the largest rowid in the file SQLite picks new ones at random,
    // nearly all past 2^53: the same case, not deterministic.)
    for (const rowid of [9007199254740992n]) {
      db.$client
        .query(
          `INSERT INTO rate_limit_counters (rowid, policy, key, window_start, current, previous,
             burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
           VALUES (?1, 'planted', ?2, 0, 0, 0, 0, 0, 0, 0, 4000000000000000, 4000000000000000)`,
        )
        .run(rowid, `planted-${rowid}`);
    }
    const now = minuteStart() + 1_000;
    const limit = policy(3, 3);
    for (const key of ["one-at-a-time", "together"]) {
      const outcomes =
        key === "together"
          ? await Promise.all(
              Array.from({ length: 10 }, () => store.check([{ policy: limit, key, now }])),
            )
          : await (async () => {
              const each = [];
              for (let i = 0; i < 10; i++)
                each.push(await store.check([{ policy: limit, key, now }]));
              return each;
            })();
      expect([key, outcomes.filter(([o]) => o!.admitted).length]).toEqual([key, 3]);
      const row = db.$client
        .query(
          "SELECT CAST(rowid AS TEXT) AS rowid, current FROM rate_limit_counters WHERE key = ?",
        )
        .get(key) as { rowid: string; current: number };
      expect(row.current).toBe(3);
      expect(BigInt(row.rowid)).toBe(key === "one-at-a-time" ? 2n ** 53n + 1n : 2n ** 53n + 2n);
    }
    // The planted row is as it was.
    expect(
      db.$client.query("SELECT current FROM rate_limit_counters WHERE policy = 'planted'").all(),
    ).toEqual([{ current: 0 }]);
  });

  test("a check that finds its row already in the next window is decided there and never moves the row back", async () => {
    const { store, db } = freshStore();
    const next = minuteStart() + 60_000;
    const stale = next - 100;
    db.$client.run(
      `INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
        burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
       VALUES ('test', 'k', ${next}, 4, 0, ${next}, 4, 0, 1, ${next + 120_000}, ${next + 120_000})`,
    );
    // The burst limit is 5 and the next burst window already holds 4: one more, not a fresh 5.
    const outcomes = await Promise.all(
      Array.from({ length: 5 }, () =>
        store.check([{ policy: policy(100, 5), key: "k", now: stale }]),
      ),
    );
    expect(outcomes.filter(([o]) => o!.admitted)).toHaveLength(1);
    expect(outcomes[4]![0]).toMatchObject({
      windowStart: next,
      burstWindowStart: next,
      burstCurrent: 5,
    });
    const row = db.$client
      .query(
        "SELECT window_start, current, burst_window_start, burst_current FROM rate_limit_counters",
      )
      .get();
    expect(row).toEqual({
      window_start: next,
      current: 5,
      burst_window_start: next,
      burst_current: 5,
    });
  });

  test("prune deletes expired rows only, a bounded number per call", async () => {
    const { store, db } = freshStore();
    const small = new SqliteLimiterStore({ sqlite: db.$client, pruneBatch: 2 });
    const now = minuteStart();
    for (const key of ["a", "b", "c"]) await store.check([{ policy: policy(5), key, now }]);
    await store.check([{ policy: policy(5), key: "live", now: now + 600_000 }]);
    const count = () =>
      (db.$client.query("SELECT count(*) AS n FROM rate_limit_counters").get() as { n: number }).n;
    expect(small.prune(now + 300_000)).toBe(2);
    expect(small.prune(now + 300_000)).toBe(1);
    expect(small.prune(now + 300_000)).toBe(0);
    expect(count()).toBe(1);
  });

  test("a flood of expired rows is pruned on the following turns, live rows kept, one batch per turn", async () => {
    const { db } = freshStore();
    const small = new SqliteLimiterStore({ sqlite: db.$client, pruneBatch: 500 });
    const now = minuteStart();
    const insert = counterInserter(db);
    // Fifteen thousand addresses of a rotating flood that have gone quiet, and a few live ones.
    db.$client.transaction(() => {
      for (let i = 0; i < 15_000; i++) insert.run(`gone-${i}`, now - 1);
      for (let i = 0; i < 7; i++) insert.run(`live-${i}`, now + 60_000);
    })();
    const count = () =>
      (db.$client.query("SELECT count(*) AS n FROM rate_limit_counters").get() as { n: number }).n;
    const turns: number[] = [];
    const sampler = setInterval(() => turns.push(count()), 0);
    expect(small.prune(now)).toBe(500);
    expect(count()).toBe(15_007 - 500);
    await waitFor(() => count() === 7, { timeoutMs: 10_000 });
    clearInterval(sampler);
    const keys = db.$client.query("SELECT key FROM rate_limit_counters ORDER BY key").all();
    expect(keys).toEqual(Array.from({ length: 7 }, (_, i) => ({ key: `live-${i}` })));
    // Other work ran between batches: the event loop was not held until the table was clean.
    expect(new Set(turns).size).toBeGreaterThan(2);
    small.close();
  });

  test("close stops a prune that is still catching up", async () => {
    const { db } = freshStore();
    const small = new SqliteLimiterStore({ sqlite: db.$client, pruneBatch: 10 });
    const now = minuteStart();
    const insert = counterInserter(db);
    db.$client.transaction(() => {
      for (let i = 0; i < 100; i++) insert.run(`gone-${i}`, now - 1);
    })();
    small.prune(now);
    small.close();
    await Bun.sleep(20);
    const { n } = db.$client.query("SELECT count(*) AS n FROM rate_limit_counters").get() as {
      n: number;
    };
    expect(n).toBe(90);
  });

  test("a failing database rejects every check of the batch", async () => {
    const { store, db } = freshStore();
    db.$client.run("DROP TABLE rate_limit_counters");
    const now = minuteStart();
    const results = await Promise.allSettled([
      store.check([{ policy: policy(5), key: "a", now }]),
      store.check([{ policy: policy(5), key: "b", now }]),
    ]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
  });

  test("100,000 checks leave the WAL file under 64 MB", async () => {
    const { store, path } = freshStore();
    const now = minuteStart() + 1_000;
    const big = policy(1_000_000_000);
    for (let round = 0; round < 20; round++) {
      await Promise.all(
        Array.from({ length: 5_000 }, (_, i) =>
          store.check([{ policy: big, key: `k${(round * 5_000 + i) % 10_000}`, now }]),
        ),
      );
    }
    const wal = statSync(`${path}-wal`).size;
    expect(wal).toBeLessThan(64 * 1024 * 1024);
  });
});
