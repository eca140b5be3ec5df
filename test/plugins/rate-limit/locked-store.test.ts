/**
 * The SQLite limiter store under another connection's write lock: checks wait for it from a timer
 * (the event loop keeps running), succeed when it goes within the bounded wait, and reject after
 * it; checks that arrive meanwhile wait with the others instead of each meeting the lock.
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { REQUEST_BUSY_TIMEOUT_MS, setBusyTimeout } from "../../../src/db/busy";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import type { Policy } from "../../../src/plugins/rate-limit/policies";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import { tempDir } from "../../support/app";

const policy: Policy = {
  id: "test",
  limit: 100,
  windowMs: 60_000,
  burstLimit: 100,
  failClosed: false,
};

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanup.reverse()) fn();
  cleanup = [];
});

function lockedStore(busyWaitMs: number) {
  const dir = tempDir();
  const path = join(dir.path, "limits.db");
  const db = openDatabase(path);
  applyMigrations(db);
  setBusyTimeout(db.$client, REQUEST_BUSY_TIMEOUT_MS);
  const store = new SqliteLimiterStore({ sqlite: db.$client, busyWaitMs });
  const holder = new Database(path);
  holder.run("BEGIN EXCLUSIVE");
  cleanup.push(() => {
    if (holder.inTransaction) holder.run("ROLLBACK");
    holder.close();
    store.close();
    db.$client.close();
    dir.remove();
  });
  return { store, holder };
}

const check = (store: SqliteLimiterStore, key: string) =>
  store.check([{ policy, key, now: Date.now() }]);

test("checks wait for the lock without blocking, and are decided when it goes", async () => {
  const { store, holder } = lockedStore(2_000);
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 10);
  const started = performance.now();
  const pending = Promise.all([check(store, "a"), check(store, "b"), check(store, "a")]);
  setTimeout(() => holder.run("COMMIT"), 400);
  const outcomes = await pending;
  clearInterval(ticker);
  expect(outcomes.map((o) => o[0]!.admitted)).toEqual([true, true, true]);
  expect(performance.now() - started).toBeGreaterThanOrEqual(390);
  // The event loop ran while they waited: blocked for the wait, an interval fires once after it
  // (it does not catch up). Not ~40: each try meets the lock for up to REQUEST_BUSY_TIMEOUT_MS,
  // and with two test workers side by side it ticked only 10 times.
  expect(ticks).toBeGreaterThan(3);
});

test("checks still locked out after the bounded wait reject; later ones succeed", async () => {
  const { store, holder } = lockedStore(200);
  const started = performance.now();
  const failed = await check(store, "a").then(
    () => null,
    (error: Error) => error,
  );
  const waited = performance.now() - started;
  expect(failed?.message).toBe("database is locked");
  expect(waited).toBeGreaterThanOrEqual(200);
  expect(waited).toBeLessThan(1_000);
  holder.run("COMMIT");
  expect((await check(store, "a"))[0]!.admitted).toBe(true);
});
