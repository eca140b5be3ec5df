import { afterEach, describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { type AppDatabase, openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import type { Policy } from "../../../src/plugins/rate-limit/policies";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import { tempDir } from "../../support/app";

const policy = (limit: number, burstLimit = limit): Policy => ({
  id: "test",
  limit,
  windowMs: 60_000,
  burstLimit,
  failClosed: false,
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

const minuteStart = () => Math.floor(Date.now() / 60_000) * 60_000;

describe("SqliteLimiterStore", () => {
  test("admits exactly the limit of concurrent checks and counts only admitted ones", async () => {
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

  test("keys and policies are counted apart", async () => {
    const { store } = freshStore();
    const now = minuteStart() + 1_000;
    const [a] = await store.check([{ policy: policy(1), key: "a", now }]);
    const [b] = await store.check([{ policy: policy(1), key: "b", now }]);
    const [other] = await store.check([{ policy: { ...policy(1), id: "other" }, key: "a", now }]);
    const [again] = await store.check([{ policy: policy(1), key: "a", now }]);
    expect([a!.admitted, b!.admitted, other!.admitted, again!.admitted]).toEqual([
      true,
      true,
      true,
      false,
    ]);
  });

  test("the previous window slides out", async () => {
    const { store } = freshStore();
    const start = minuteStart();
    for (let i = 0; i < 10; i++) await store.check([{ policy: policy(10), key: "k", now: start }]);
    // 30 s into the next window half of the previous 10 still count: 5 more fit.
    const later = start + 90_000;
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, () => store.check([{ policy: policy(10), key: "k", now: later }])),
    );
    expect(outcomes.filter(([o]) => o!.admitted)).toHaveLength(5);
    // Two windows later nothing of it remains.
    const [fresh] = await store.check([{ policy: policy(10), key: "k", now: start + 180_000 }]);
    expect(fresh).toMatchObject({ admitted: true, previous: 0, current: 1 });
  });

  test("the burst window caps short spikes below the minute limit", async () => {
    const { store } = freshStore();
    const now = minuteStart() + 1_000;
    const first = await Promise.all(
      Array.from({ length: 5 }, () => store.check([{ policy: policy(10, 3), key: "k", now }])),
    );
    expect(first.filter(([o]) => o!.admitted)).toHaveLength(3);
    const [afterBurst] = await store.check([
      { policy: policy(10, 3), key: "k", now: now + 20_000 },
    ]);
    expect(afterBurst!.admitted).toBe(true);
  });

  test("a refusal by the first policy is not counted by the next", async () => {
    const { store } = freshStore();
    const now = minuteStart() + 1_000;
    const strict = { ...policy(1), id: "strict" };
    const loose = { ...policy(100), id: "loose" };
    await store.check([
      { policy: strict, key: "k", now },
      { policy: loose, key: "k", now },
    ]);
    const second = await store.check([
      { policy: strict, key: "k", now },
      { policy: loose, key: "k", now },
    ]);
    expect(second).toHaveLength(1);
    expect(second[0]!.admitted).toBe(false);
    const [looseOnly] = await store.check([{ policy: loose, key: "k", now }]);
    expect(looseOnly!.current).toBe(2);
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

  test("concurrent checks for one key are decided together, and refusals cost nothing", async () => {
    const { store } = freshStore();
    const now = minuteStart() + 1_000;
    const strict = { ...policy(3), id: "strict" };
    const loose = { ...policy(100), id: "loose" };
    // Both policies, ten requests at once: 3 pass the first, so only 3 are counted by the second.
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, () =>
        store.check([
          { policy: strict, key: "k", now },
          { policy: loose, key: "k", now },
        ]),
      ),
    );
    expect(outcomes.filter((o) => o.length === 2 && o[1]!.admitted)).toHaveLength(3);
    expect(outcomes.filter((o) => o.length === 1 && !o[0]!.admitted)).toHaveLength(7);
    const [looseAfter] = await store.check([{ policy: loose, key: "k", now }]);
    expect(looseAfter!.current).toBe(4);
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
