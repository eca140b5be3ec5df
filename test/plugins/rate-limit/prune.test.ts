/**
 * The SQLite store's prune finds rows by `prune_after`, which checks never write (only the insert
 * and the prune do), while `expires_at` moves on with every check. So a client still counting can
 * have a passed `prune_after`: the prune must keep it, with its counts, and delete it once it has
 * really expired; and rows it keeps must not stop it reaching the expired rows behind them.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { type AppDatabase, openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { applyMigrationsFrom } from "../../../src/db/migrate-from-folder";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import { tempDir } from "../../support/app";
import { migrationsUpTo } from "../../support/migrations";
import { waitFor } from "../../support/wait";
import { minuteStart, policy } from "./store-contract";
import { sqliteEstimate } from "./stored-estimate";

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanup.reverse()) fn();
  cleanup = [];
});

function openFresh(migrationsFolder?: string): { db: AppDatabase; dir: string } {
  const dir = tempDir();
  const db = openDatabase(join(dir.path, "limits.db"));
  if (migrationsFolder === undefined) applyMigrations(db);
  else applyMigrationsFrom(db, migrationsFolder);
  cleanup.push(() => {
    db.$client.close();
    dir.remove();
  });
  return { db, dir: dir.path };
}

type CounterRow = {
  window_start: number;
  previous: number;
  current: number;
  expires_at: number;
  prune_after: number;
};
const rowOf = (db: AppDatabase, key: string) =>
  db.$client
    .query<CounterRow, [string]>(
      "SELECT window_start, previous, current, expires_at, prune_after FROM rate_limit_counters WHERE key = ?1",
    )
    .get(key);
const count = (db: AppDatabase) =>
  (db.$client.query("SELECT count(*) AS n FROM rate_limit_counters").get() as { n: number }).n;

describe("SqliteLimiterStore: pruning rows that checks keep alive", () => {
  test("a client still counting is kept with its counts, and deleted once its windows have passed", async () => {
    const { db } = openFresh();
    const store = new SqliteLimiterStore({ sqlite: db.$client });
    cleanup.push(() => store.close());
    const t0 = minuteStart();
    const limit = policy(10);
    for (let i = 0; i < 5; i++) await store.check([{ policy: limit, key: "busy", now: t0 }]);
    for (let i = 0; i < 3; i++) {
      await store.check([{ policy: limit, key: "busy", now: t0 + 90_000 }]);
    }
    await store.check([{ policy: limit, key: "quiet", now: t0 }]);
    // Both rows were inserted at t0 (due at t0 + 2 min); "busy" counted again in the next window.
    const before = rowOf(db, "busy")!;
    expect(before.prune_after).toBe(t0 + 120_000);
    expect(before.expires_at).toBe(t0 + 180_000);

    const at = t0 + 125_000;
    expect(store.prune(at)).toBe(1);
    expect(rowOf(db, "quiet")).toBeNull();
    const kept = rowOf(db, "busy")!;
    expect(kept).toEqual({ ...before, prune_after: t0 + 180_000 });
    // Its last window still counts: 3 × (1 − 5/60).
    expect(await sqliteEstimate(db.$client)(limit, "busy", at)).toBeCloseTo(2.75, 5);
    // Looked at again only once it may have expired.
    expect(store.prune(at + 1_000)).toBe(0);

    expect(store.prune(t0 + 180_001)).toBe(1);
    expect(count(db)).toBe(0);
  });

  test("a row whose prune_after no check writes (text, far ahead) is deleted by the next prune, a bounded batch at a time; a clock set back a day keeps its rows (probe 89b F3)", async () => {
    const { db } = openFresh();
    const store = new SqliteLimiterStore({ sqlite: db.$client, pruneBatch: 100 });
    cleanup.push(() => store.close());
    const t0 = minuteStart();
    const limit = policy(10);
    await store.check([{ policy: limit, key: "live", now: t0 }]);
    // Rows written into the file: 250 with a prune_after that is text or years ahead, and one
    // a live client of a clock a day ahead left (within the horizon).
    const insert = db.$client.prepare(
      `INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
         burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
       VALUES (?1, ?2, ?3, 1, 0, ?3, 1, 0, 1, ?4, ?5)`,
    );
    for (let i = 0; i < 250; i++) {
      const pruneAfter = i % 2 === 0 ? "x" : 9e15;
      insert.run(limit.id, `forged-${i}`, t0, i % 3 === 0 ? "y" : t0 + 120_000, pruneAfter);
    }
    const dayAhead = t0 + 24 * 60 * 60_000;
    insert.run(limit.id, "clock-set-back", dayAhead, dayAhead + 120_000, dayAhead + 120_000);
    // A check of a forged key rewrites its counts, never its prune_after: still pruned.
    await store.check([{ policy: limit, key: "forged-0", now: t0 }]);
    expect(store.prune(t0 + 1_000)).toBe(100);
    await waitFor(() => count(db) === 2, { what: "the rest pruned on the next turns" });
    const left = db.$client
      .query("SELECT key FROM rate_limit_counters ORDER BY key")
      .values()
      .flat();
    expect(left).toEqual(["clock-set-back", "live"]);
  });

  test("a full batch of live rows does not stop the prune reaching the expired rows behind it", async () => {
    const { db } = openFresh();
    const store = new SqliteLimiterStore({ sqlite: db.$client, pruneBatch: 100 });
    cleanup.push(() => store.close());
    const now = minuteStart();
    // Rows kept by migration 0011 have prune_after 0: all due, whether expired or not.
    const insert = db.$client.prepare(
      `INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
        burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
       VALUES ('p', ?1, 0, 1, 0, 0, 1, 0, 1, ?2, 0)`,
    );
    db.$client.transaction(() => {
      for (let i = 0; i < 1_000; i++) insert.run(`live-${i}`, now + 60_000);
      for (let i = 0; i < 1_000; i++) insert.run(`gone-${i}`, now - 1);
    })();
    // The first batch is all live rows: nothing deleted now, and the prune goes on regardless.
    expect(store.prune(now)).toBe(0);
    await waitFor(() => count(db) === 1_000, { timeoutMs: 10_000, what: "the expired rows gone" });
    const left = db.$client
      .query<{ n: number }, []>(
        `SELECT count(*) AS n FROM rate_limit_counters WHERE key LIKE 'live-%' AND prune_after = ${now + 60_000}`,
      )
      .get()!;
    expect(left.n).toBe(1_000);
  });
});

describe("migration 0011 (prune_after)", () => {
  test("keeps the counters a running service has, and the prune then deletes only the expired", async () => {
    const dir = tempDir();
    cleanup.push(() => dir.remove());
    const folder = migrationsUpTo(dir.path, 10);
    const { db } = openFresh(folder);
    const now = minuteStart();
    const insert = db.$client.prepare(
      `INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
        burst_window_start, burst_current, burst_previous, admitted, expires_at)
       VALUES ('test', ?1, ?2, 4, 0, ?2, 4, 0, 1, ?3)`,
    );
    insert.run("ip:192.0.2.1", now, now + 120_000);
    insert.run("ip:192.0.2.2", now - 180_000, now - 60_000);

    applyMigrations(db);
    const store = new SqliteLimiterStore({ sqlite: db.$client });
    cleanup.push(() => store.close());
    expect(count(db)).toBe(2);
    expect(store.prune(now + 1_000)).toBe(1);
    expect(rowOf(db, "ip:192.0.2.2")).toBeNull();
    // The live client's count survived the upgrade and still limits it.
    expect(await sqliteEstimate(db.$client)(policy(10), "ip:192.0.2.1", now + 1_000)).toBe(4);
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, () =>
        store.check([{ policy: policy(10), key: "ip:192.0.2.1", now: now + 1_000 }]),
      ),
    );
    expect(outcomes.filter(([o]) => o!.admitted)).toHaveLength(6);
  });
});
