/**
 * The maintenance run (every 10 s) under another process's write lock: the event loop waits for
 * the lock once a run, not once per task, and the run says so in one line.
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "./support/app";

let target: TestApp | undefined;
afterEach(() => {
  target?.close();
  target = undefined;
});

/** Statements that took longer than half a second: each one a wait for the lock, here. */
async function statementsOverHalfASecond(app: TestApp): Promise<number> {
  const text = await (await send(app, "/metrics")).text();
  let total = 0;
  let fast = 0;
  for (const match of text.matchAll(/^db_query_duration_seconds_count\{[^}]*\} (\d+)$/gm)) {
    total += Number(match[1]);
  }
  for (const match of text.matchAll(
    /^db_query_duration_seconds_bucket\{[^}]*le="0\.5"[^}]*\} (\d+)$/gm,
  )) {
    fast += Number(match[1]);
  }
  return total - fast;
}

const busyTimeout = (app: TestApp) =>
  Number(app.db.$client.query("PRAGMA busy_timeout").values()[0]![0]);

test("a run that meets a write lock waits for it once, tries the rest without waiting, and says so once", async () => {
  target = buildTestApp();
  const app = target;
  // Long enough that a wait cannot be mistaken for a slow statement.
  app.db.$client.run("PRAGMA busy_timeout = 1000");
  const before = await statementsOverHalfASecond(app);

  const locker = new Database(app.databasePath);
  locker.run("BEGIN IMMEDIATE");
  try {
    app.services.runMaintenance();
  } finally {
    locker.run("ROLLBACK");
    locker.close();
  }

  expect((await statementsOverHalfASecond(app)) - before).toBe(1);
  expect(busyTimeout(app)).toBe(1000);
  const deferred = app.logs.entries.filter(
    (line) => line.msg === "maintenance deferred: the database is locked",
  );
  expect(deferred).toHaveLength(1);
  // More than one task needed the lock: the others were tried, without waiting, and put off.
  expect(deferred[0]!.tasks).toBeGreaterThan(1);

  // Without the lock, the next run does its work and says nothing of a lock.
  app.services.runMaintenance();
  expect(
    app.logs.entries.filter((line) => String(line.msg).startsWith("maintenance")),
  ).toHaveLength(1);
  // Room for a run that waited once per task (seven seconds): it fails on its count, not the clock.
}, 20_000);
