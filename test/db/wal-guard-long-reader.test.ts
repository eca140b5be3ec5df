/**
 * The WAL guard with a long transaction on the file (probe 46c F1): an operator's shell left
 * inside `BEGIN; SELECT …` keeps any checkpoint from restarting the WAL. Each TRUNCATE held every
 * process's writers for its busy timeout and achieved nothing, four times a second. Each test
 * drives the guard's looks itself on a clock it moves, as the 250 ms timer would.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { walGuard } from "../../src/db/wal-guard";
import { createLogger } from "../../src/logging/logger";
import { registerWalMetrics } from "../../src/plugins/metrics/database";
import { createMetricsRegistry } from "../../src/plugins/metrics/registry";
import { LogCapture } from "../support/app";
import { walSize, walTestFiles, writeFiller } from "../support/wal-files";

const files = walTestFiles();

const LIMIT = 256 * 1024;
const LOOK_MS = 250;
const HELD =
  "WAL past WAL_TRUNCATE_MB and cannot be truncated: another connection's long transaction holds a snapshot";
const RELEASED = "WAL truncated: the transaction that held it past WAL_TRUNCATE_MB has ended";

/** A file as the service opens it, once per process; `reader` is the operator's shell. */
function database(processes = 1) {
  const { path, connections, other } = files.database(processes);
  return { path, connections, reader: other };
}

/** A process's guard on its connection, its metrics and its log, on the clock `clock.t`. */
function process(sqlite: Database, clock: { t: number }) {
  const logs = new LogCapture();
  const registry = createMetricsRegistry();
  const count = registerWalMetrics(registry, sqlite);
  const guard = walGuard(sqlite, {
    limitBytes: LIMIT,
    logger: createLogger({ level: "info", destination: logs }),
    onTruncateCheckpoint: count,
    now: () => clock.t,
  });
  const metric = async (series: string) => {
    const line = (await registry.metrics()).split("\n").find((l) => l.startsWith(`${series} `));
    return line === undefined ? null : Number(line.slice(series.length + 1));
  };
  const messages = (level: string) =>
    logs.entries.filter((entry) => entry.level === level).map((entry) => entry.msg);
  return { guard, metric, logs, warnings: () => messages("warn"), infos: () => messages("info") };
}

/** One process's guard, with a reader holding a snapshot and the WAL written past the limit. */
function heldByReader() {
  const { path, connections, reader } = database();
  const [writer] = connections as [Database];
  const clock = { t: 0 };
  const guarded = process(writer, clock);
  reader.run("BEGIN");
  reader.query("SELECT count(*) FROM filler").get();
  writeFiller(writer, 2 * LIMIT);
  return { path, writer, reader, clock, guarded };
}

const busyAttempts = 'db_wal_truncate_checkpoints_total{outcome="busy"}';
const truncations = 'db_wal_truncate_checkpoints_total{outcome="truncated"}';

test("while a long reader holds its snapshot, TRUNCATE is tried after 1, 2, 4 … s, not at every look; it is said once with the size; the reader's end truncates at once", async () => {
  const { path, writer, reader, clock, guarded } = heldByReader();

  // A minute of looks, the service writing between them.
  for (; clock.t < 60_000; clock.t += LOOK_MS) {
    guarded.guard.look();
    writeFiller(writer, 8000);
  }
  // 240 looks; attempts at 0, 1, 3, 7, 15 and 31 s (the next is due at 61 s).
  expect(await guarded.metric(busyAttempts)).toBe(6);
  expect(await guarded.metric(truncations)).toBe(0);
  expect(walSize(path)).toBeGreaterThan(2 * LIMIT);
  expect(await guarded.metric("db_wal_size_bytes")).toBe(walSize(path));
  expect(guarded.warnings()).toEqual([HELD]);
  const warning = guarded.logs.entries.find((entry) => entry.msg === HELD)!;
  expect(warning.walBytes as number).toBeGreaterThan(LIMIT);
  expect(warning.limitBytes).toBe(LIMIT);

  reader.run("COMMIT");
  // Before the next attempt is due: the copying moved past the reader's snapshot.
  clock.t += LOOK_MS;
  guarded.guard.look();
  expect(walSize(path)).toBe(0);
  expect(await guarded.metric("db_wal_size_bytes")).toBe(0);
  expect(await guarded.metric(truncations)).toBe(1);
  expect(await guarded.metric(busyAttempts)).toBe(6);
  expect(guarded.infos()).toEqual([RELEASED]);
  const released = guarded.logs.entries.find((entry) => entry.msg === RELEASED)!;
  expect(released.largestBytes as number).toBeGreaterThan(2 * LIMIT);
  expect(guarded.warnings()).toEqual([HELD]);
});

test("a reader held for minutes is said again every five minutes, never at each attempt; the tries stay at most every 30 s", async () => {
  const { reader, clock, guarded } = heldByReader();
  const minutes = 11;
  for (; clock.t < minutes * 60_000; clock.t += LOOK_MS) guarded.guard.look();
  // 0, 1, 3, 7, 15, 31 s, then every 30 s: 61, 91 … 631 s.
  expect(await guarded.metric(busyAttempts)).toBe(6 + Math.floor((minutes * 60 - 31) / 30));
  // At 1 s, and at the first attempt five minutes after each.
  expect(guarded.warnings()).toEqual([HELD, HELD, HELD]);
  reader.run("COMMIT");
});

test("processes sharing the file each back off; when the reader ends the first truncates, and each says so once", async () => {
  const { path, connections, reader } = database(3);
  const clock = { t: 0 };
  const processes = connections.map((sqlite) => process(sqlite, clock));
  reader.run("BEGIN");
  reader.query("SELECT count(*) FROM filler").get();
  writeFiller(connections[0]!, 2 * LIMIT);
  for (; clock.t < 60_000; clock.t += LOOK_MS) {
    for (const [i, { guard }] of processes.entries()) {
      guard.look();
      writeFiller(connections[i]!, 4000);
    }
  }
  for (const guarded of processes) {
    expect(await guarded.metric(busyAttempts)).toBe(6);
    expect(guarded.warnings()).toEqual([HELD]);
  }
  reader.run("COMMIT");
  clock.t += LOOK_MS;
  for (const { guard } of processes) guard.look();
  expect(walSize(path)).toBe(0);
  expect(await processes[0]!.metric(truncations)).toBe(1);
  for (const guarded of processes) expect(guarded.infos()).toEqual([RELEASED]);
  // No more attempts: the others found the WAL within its limit.
  for (const guarded of processes.slice(1)) expect(await guarded.metric(truncations)).toBe(0);
});

test("a write lock held for one look is not a held WAL: nothing is said, and the next try truncates", async () => {
  const { path, connections } = database(2);
  const [writer, other] = connections as [Database, Database];
  const clock = { t: 0 };
  const guarded = process(writer, clock);
  writeFiller(writer, 2 * LIMIT);
  other.run("BEGIN IMMEDIATE");
  guarded.guard.look();
  other.run("ROLLBACK");
  expect(await guarded.metric(busyAttempts)).toBe(1);
  for (clock.t += LOOK_MS; walSize(path) > 0 && clock.t < 5_000; clock.t += LOOK_MS) {
    guarded.guard.look();
  }
  expect(walSize(path)).toBe(0);
  expect(await guarded.metric(truncations)).toBe(1);
  expect(guarded.warnings()).toEqual([]);
  expect(guarded.infos()).toEqual(["WAL past its limit: checkpointed and truncated"]);
});

test("long readers that overlap: one's end while the next still holds a snapshot is no reason to try at once (probe 47b F2)", async () => {
  const { path, connections, reader } = database();
  const [writer] = connections as [Database];
  const clock = { t: 0 };
  const guarded = process(writer, clock);
  const next = new Database(path);
  try {
    reader.run("BEGIN");
    reader.query("SELECT count(*) FROM filler").get();
    writeFiller(writer, 2 * LIMIT);
    // The first try is busy; the next is due a second later.
    guarded.guard.look();
    expect(await guarded.metric(busyAttempts)).toBe(1);
    // A second reader takes a later snapshot, the service writes on, and the first reader ends:
    // the copying moves up to the second's snapshot, not to the WAL's end.
    next.run("BEGIN");
    next.query("SELECT count(*) FROM filler").get();
    writeFiller(writer, 40_000);
    reader.run("COMMIT");
    for (let look = 0; look < 3; look++) {
      clock.t += LOOK_MS;
      guarded.guard.look();
    }
    expect(await guarded.metric(busyAttempts)).toBe(1);
    // Once the second ends too, the next look truncates, before the try is due.
    next.run("COMMIT");
    clock.t += LOOK_MS;
    guarded.guard.look();
    expect(await guarded.metric(truncations)).toBe(1);
    expect(walSize(path)).toBe(0);
  } finally {
    if (next.inTransaction) next.run("COMMIT");
    next.close();
  }
});
