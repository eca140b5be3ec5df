import { afterEach, describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { type AppDatabase, openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import { tempDir } from "../../support/app";
import { limiterStoreContract, minuteStart, policy } from "./store-contract";

// Two stores on two connections to one file: what two processes of one VM share.
limiterStoreContract("SqliteLimiterStore", () => {
  const dir = tempDir();
  const path = join(dir.path, "limits.db");
  const dbs = [openDatabase(path), openDatabase(path)] as const;
  applyMigrations(dbs[0]);
  const stores = dbs.map((db) => new SqliteLimiterStore({ sqlite: db.$client }));
  return {
    stores: [stores[0]!, stores[1]!],
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
