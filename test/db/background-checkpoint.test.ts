import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { copyFileSync, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  BACKGROUND_START_BYTES,
  type BackgroundCheckpoints,
  backgroundCheckpoints,
} from "../../src/db/background-checkpoint";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { createLogger } from "../../src/logging/logger";
import { createServices } from "../../src/services";
import { LogCapture, TEST_PASSWORD_HASHING, tempDir, testConfig } from "../support/app";

let dir: ReturnType<typeof tempDir> | null = null;
const open: Database[] = [];
const threads: BackgroundCheckpoints[] = [];
afterEach(async () => {
  await Promise.all(threads.splice(0).map((thread) => thread.stop()));
  for (const sqlite of open.splice(0)) sqlite.close();
  dir?.remove();
  dir = null;
});

const STARTED = "WAL growing: checkpoints moved to a background thread";
const FAILED = "background checkpoints failed: the serving connection checkpoints alone";

/**
 * The service's connection, except that it never checkpoints on its own: whatever reaches the
 * database file got there through the background thread.
 */
function serviceDatabase() {
  dir = tempDir("palisade-checkpoint-");
  const path = join(dir.path, "palisade.db");
  const sqlite = openDatabase(path).$client;
  sqlite.run("PRAGMA wal_autocheckpoint = 0");
  sqlite.run("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)");
  open.push(sqlite);
  return { path, sqlite };
}

function checkpointer(path: string, logs: LogCapture, startAtBytes = 64 * 1024) {
  const thread = backgroundCheckpoints({
    path,
    logger: createLogger({ level: "info", destination: logs }),
    startAtBytes,
  });
  threads.push(thread);
  return thread;
}

const walSize = (path: string) => statSync(`${path}-wal`).size;

/** Writes `rows` rows of ~4 KB, one small transaction each, as requests do. */
function write(sqlite: Database, rows: number) {
  const insert = sqlite.prepare("INSERT INTO filler (data) VALUES (randomblob(4000))");
  for (let i = 0; i < rows; i++) insert.run();
  insert.finalize();
}

/**
 * Rows in the database file alone: a copy of it without its WAL, as after a lost WAL. A copy taken
 * while the thread is writing pages back can be half old, half new: taken again then.
 */
function rowsInFile(path: string): number {
  for (let attempt = 0; ; attempt++) {
    const copy = join(dir!.path, `copy-${Math.random().toString(36).slice(2)}.db`);
    copyFileSync(path, copy);
    const sqlite = new Database(copy, { readonly: true });
    try {
      const table = sqlite
        .query("SELECT count(*) AS n FROM sqlite_master WHERE name = 'filler'")
        .get() as { n: number };
      if (table.n === 0) return 0;
      return (sqlite.query("SELECT count(*) AS n FROM filler").get() as { n: number }).n;
    } catch (error) {
      const torn = error instanceof Error && "code" in error && error.code === "SQLITE_CORRUPT";
      if (!torn || attempt >= 20) throw error;
      Bun.sleepSync(10);
    } finally {
      sqlite.close();
    }
  }
}

async function until(condition: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await Bun.sleep(10);
}

test("once the WAL is past its threshold a thread copies what is written into the database file, as it is written", async () => {
  const { path, sqlite } = serviceDatabase();
  const logs = new LogCapture();
  const thread = checkpointer(path, logs);
  write(sqlite, 100);
  expect(rowsInFile(path)).toBe(0);
  thread.consider(walSize(path));
  expect(thread.running).toBe(true);
  // The thread's "started" message reaches this thread as an event, which the file can beat.
  await until(() => rowsInFile(path) === 100 && logs.entries.length > 0);
  expect(rowsInFile(path)).toBe(100);
  expect(logs.entries.map((entry) => entry.msg)).toEqual([STARTED]);

  // It keeps up with what comes next, with no other call.
  write(sqlite, 50);
  await until(() => rowsInFile(path) === 150);
  expect(rowsInFile(path)).toBe(150);
  // Nothing was lost or doubled on the service's side either.
  expect((sqlite.query("SELECT count(*) AS n FROM filler").get() as { n: number }).n).toBe(150);
});

test("below the threshold no thread starts, and nothing reaches the file", async () => {
  const { path, sqlite } = serviceDatabase();
  const logs = new LogCapture();
  const thread = checkpointer(path, logs, 64 * 1024 * 1024);
  write(sqlite, 20);
  thread.consider(walSize(path));
  expect(thread.running).toBe(false);
  await Bun.sleep(100);
  expect(rowsInFile(path)).toBe(0);
  expect(logs.lines).toEqual([]);
});

test("stop() closes the thread's connection: the service's own close then checkpoints and removes the WAL", async () => {
  const { path, sqlite } = serviceDatabase();
  const thread = checkpointer(path, new LogCapture());
  write(sqlite, 30);
  thread.consider(walSize(path));
  await until(() => rowsInFile(path) === 30);
  await thread.stop();
  expect(thread.running).toBe(false);
  // Nothing starts it again.
  thread.consider(walSize(path));
  expect(thread.running).toBe(false);
  open.splice(open.indexOf(sqlite), 1);
  sqlite.close();
  // Only the last connection to close removes the WAL: the thread's was closed before.
  expect(existsSync(`${path}-wal`)).toBe(false);
  expect(rowsInFile(path)).toBe(30);
});

test("a thread that cannot open the database is reported once and never started again", async () => {
  const { path, sqlite } = serviceDatabase();
  const logs = new LogCapture();
  const thread = checkpointer(join(dir!.path, "gone", "palisade.db"), logs);
  write(sqlite, 30);
  thread.consider(walSize(path));
  await until(() => logs.lines.length > 0);
  expect(thread.running).toBe(false);
  thread.consider(walSize(path));
  await Bun.sleep(50);
  expect(logs.entries.map((entry) => [entry.level, entry.msg])).toEqual([["error", FAILED]]);
});

test("two processes' threads on one file share it: everything is copied, and neither fails", async () => {
  const { path, sqlite } = serviceDatabase();
  const logs = new LogCapture();
  const first = checkpointer(path, logs);
  const second = checkpointer(path, logs);
  first.consider(1 << 20);
  second.consider(1 << 20);
  for (let round = 0; round < 20; round++) {
    write(sqlite, 10);
    await Bun.sleep(5);
  }
  await until(() => rowsInFile(path) === 200 && logs.entries.length >= 2);
  expect(rowsInFile(path)).toBe(200);
  expect(first.running && second.running).toBe(true);
  expect(logs.entries.map((entry) => entry.msg)).toEqual([STARTED, STARTED]);
});

test("a thread whose checkpoints fail (a full disk) stays: the failure is logged once, and so is the recovery", async () => {
  const { path, sqlite } = serviceDatabase();
  const logs = new LogCapture();
  const thread = backgroundCheckpoints({
    path,
    logger: createLogger({ level: "info", destination: logs }),
    startAtBytes: 1,
    workerUrl: new URL("../support/scripted-checkpoint-worker.ts", import.meta.url),
  });
  threads.push(thread);
  write(sqlite, 1);
  thread.consider(walSize(path));
  await until(() => logs.lines.length >= 3);
  expect(logs.entries.map((entry) => [entry.level, entry.msg])).toEqual([
    ["info", STARTED],
    [
      "error",
      "background checkpoints failing: the serving connection checkpoints alone until they work again",
    ],
    ["info", "background checkpoints working again"],
  ]);
  expect(logs.entries[1]!.reason).toBe("database or disk is full");
  expect(thread.running).toBe(true);
});

test("the service starts its thread from the WAL guard once another writer takes the WAL past 4 MB, and stop() ends it", async () => {
  dir = tempDir("palisade-checkpoint-");
  const path = join(dir.path, "palisade.db");
  const db = openDatabase(path);
  applyMigrations(db);
  const logs = new LogCapture();
  const config = testConfig(path);
  const services = createServices({
    config,
    db,
    logger: createLogger({ level: "info", destination: logs }),
    passwordHashing: TEST_PASSWORD_HASHING,
    // The maintenance itself waits a minute; the WAL guard beside it looks four times a second.
    maintenanceIntervalMs: 60_000,
  });
  try {
    // Another process's writes, never checkpointed by it: ~5 MB of WAL.
    const other = new Database(path);
    open.push(other);
    other.run("PRAGMA wal_autocheckpoint = 0");
    other.run("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)");
    write(other, 1250);
    expect(walSize(path)).toBeGreaterThan(BACKGROUND_START_BYTES);
    await until(() => rowsInFile(path) === 1250);
    expect(rowsInFile(path)).toBe(1250);
    await until(() => logs.text.includes(STARTED));
    expect(logs.entries.filter((entry) => entry.msg === STARTED)).toHaveLength(1);
  } finally {
    await services.stop();
    services.close();
    db.$client.close();
  }
  expect(logs.text).not.toContain(FAILED);
});
