import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { type CheckpointLoop, checkpointLoop, type LoopReport } from "../../src/db/checkpoint-loop";
import { openDatabase } from "../../src/db/client";
import { tempDir } from "../support/app";

let dir: ReturnType<typeof tempDir> | null = null;
const open: Database[] = [];
const loops: CheckpointLoop[] = [];
afterEach(() => {
  for (const loop of loops.splice(0)) loop.stop();
  for (const sqlite of open.splice(0)) sqlite.close();
  dir?.remove();
  dir = null;
});

const INTERVALS = { busyIntervalMs: 10, idleIntervalMs: 100, retryMs: 1_000 };

/** The service's connection (never checkpointing by itself) and the thread's own. */
function connections() {
  dir = tempDir("palisade-loop-");
  const path = join(dir.path, "palisade.db");
  const service = openDatabase(path).$client;
  service.run("PRAGMA wal_autocheckpoint = 0");
  service.run("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)");
  const thread = new Database(path);
  open.push(thread, service);
  const statement = thread.prepare("PRAGMA wal_checkpoint(PASSIVE)");
  return { service, checkpoint: () => statement.values()[0] as number[] };
}

const write = (sqlite: Database, rows: number) => {
  for (let i = 0; i < rows; i++) sqlite.run("INSERT INTO filler (data) VALUES (randomblob(4000))");
};

function loopOf(checkpoint: () => readonly number[]) {
  const reports: LoopReport[] = [];
  const loop = checkpointLoop({ checkpoint, report: (r) => reports.push(r), ...INTERVALS });
  loops.push(loop);
  return { loop, reports };
}

/** The error SQLite gives a write that finds no room, as bun:sqlite throws it. */
const diskFull = () =>
  Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL", errno: 13 });

test("while the WAL changes the next look comes soon; once it has stopped changing, later", () => {
  const { service, checkpoint } = connections();
  const { loop, reports } = loopOf(checkpoint);
  write(service, 10);
  expect(loop.look()).toBe(INTERVALS.busyIntervalMs);
  expect(loop.look()).toBe(INTERVALS.idleIntervalMs);
  write(service, 1);
  expect(loop.look()).toBe(INTERVALS.busyIntervalMs);
  expect(loop.look()).toBe(INTERVALS.idleIntervalMs);
  expect(reports).toEqual([]);
});

test("a checkpoint that fails (a full disk) is reported once, retried every second, and its recovery reported", () => {
  const { service, checkpoint } = connections();
  let full = false;
  const { loop, reports } = loopOf(() => {
    if (full) throw diskFull();
    return checkpoint();
  });
  write(service, 5);
  loop.look();
  full = true;
  write(service, 5);
  expect(loop.look()).toBe(INTERVALS.retryMs);
  expect(loop.look()).toBe(INTERVALS.retryMs);
  expect(loop.look()).toBe(INTERVALS.retryMs);
  expect(reports).toEqual([{ type: "failing", message: "database or disk is full" }]);
  full = false;
  expect(loop.look()).toBe(INTERVALS.busyIntervalMs);
  expect(reports).toEqual([
    { type: "failing", message: "database or disk is full" },
    { type: "recovered" },
  ]);
  // What was written while it failed was copied back by the first checkpoint that worked.
  const [, log, copied] = checkpoint();
  expect(copied).toBe(log!);
  // A second failure is a new episode, reported again.
  full = true;
  loop.look();
  expect(reports.filter((r) => r.type === "failing")).toHaveLength(2);
});

test("a lock (another checkpoint running) is no failure: tried again soon, never reported", () => {
  const { checkpoint } = connections();
  let locked = true;
  const { loop, reports } = loopOf(() => {
    if (locked) throw Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" });
    return checkpoint();
  });
  expect(loop.look()).toBe(INTERVALS.busyIntervalMs);
  expect(loop.look()).toBe(INTERVALS.busyIntervalMs);
  locked = false;
  loop.look();
  expect(reports).toEqual([]);
});

test("it looks again by itself until stopped", async () => {
  const { service, checkpoint } = connections();
  let looks = 0;
  const { loop } = loopOf(() => {
    looks++;
    return checkpoint();
  });
  write(service, 3);
  loop.look();
  const deadline = Date.now() + 5_000;
  while (looks < 2 && Date.now() < deadline) await Bun.sleep(10);
  expect(looks).toBeGreaterThanOrEqual(2);
  loop.stop();
  const stoppedAt = looks;
  await Bun.sleep(150);
  expect(looks).toBe(stoppedAt);
});
