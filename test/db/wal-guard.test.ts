import { expect, test } from "bun:test";
import { checkpointIfLarge, startWalGuard } from "../../src/db/wal-guard";
import { createLogger } from "../../src/logging/logger";
import { LogCapture } from "../support/app";
import { walSize, walTestFiles, writeFiller } from "../support/wal-files";

const files = walTestFiles();
const LIMIT = 256 * 1024;

/** A database file as the service opens it, and a second connection: another process. */
function twoConnections() {
  const { path, connections, other } = files.database();
  return { path, writer: connections[0]!, other };
}

test("a WAL another connection keeps from resetting is truncated once that connection's transaction ends", () => {
  const { path, writer, other } = twoConnections();
  // The other connection reads an old snapshot for as long as the writer writes: no passive
  // checkpoint can copy back what it may still read, so the WAL only grows.
  other.run("BEGIN");
  other.query("SELECT count(*) FROM filler").get();
  writeFiller(writer, 2 * LIMIT);
  expect(walSize(path)).toBeGreaterThan(LIMIT);
  expect(checkpointIfLarge(writer, LIMIT)).toBe("busy");
  expect(walSize(path)).toBeGreaterThan(LIMIT);
  other.run("COMMIT");
  expect(checkpointIfLarge(writer, LIMIT)).toBe("truncated");
  expect(walSize(path)).toBe(0);
  // Nothing written was lost: every row is in the database file now.
  const rows = other.query("SELECT count(*) AS n FROM filler").get() as { n: number };
  expect(rows.n).toBe(Math.ceil((2 * LIMIT) / 4000));
});

test("a WAL within the limit is left alone", () => {
  const { path, writer } = twoConnections();
  writeFiller(writer, LIMIT / 4);
  const size = walSize(path);
  expect(size).toBeGreaterThan(0);
  expect(checkpointIfLarge(writer, LIMIT)).toBe("within");
  expect(walSize(path)).toBe(size);
});

test("the guard looks a few times a second and truncates a WAL that grew past its limit", async () => {
  const { path, writer, other } = twoConnections();
  const logs = new LogCapture();
  const stop = startWalGuard(writer, {
    limitBytes: LIMIT,
    logger: createLogger({ level: "info", destination: logs }),
    intervalMs: 20,
  });
  try {
    other.run("BEGIN");
    other.query("SELECT count(*) FROM filler").get();
    writeFiller(writer, 2 * LIMIT);
    other.run("COMMIT");
    const deadline = Date.now() + 5_000;
    while (walSize(path) > 0 && Date.now() < deadline) await Bun.sleep(10);
    expect(walSize(path)).toBe(0);
    expect(logs.entries.map((entry) => entry.msg)).toContain(
      "WAL past its limit: checkpointed and truncated",
    );
  } finally {
    stop();
  }
});

test("no WAL file is a WAL within the limit; another connection's write transaction is busy, not an error", () => {
  const { path, writer, other } = twoConnections();
  const plain = files.beside("rollback-journal.db");
  plain.run("CREATE TABLE t (x)");
  expect(checkpointIfLarge(plain, 0)).toBe("within");

  writeFiller(writer, 2 * LIMIT);
  other.run("BEGIN IMMEDIATE");
  try {
    expect(checkpointIfLarge(writer, LIMIT)).toBe("busy");
  } finally {
    other.run("ROLLBACK");
  }
  expect(checkpointIfLarge(writer, LIMIT)).toBe("truncated");
  expect(walSize(path)).toBe(0);
});

test("a checkpoint that fails otherwise is logged, and the guard keeps looking", async () => {
  const { writer, other } = twoConnections();
  const logs = new LogCapture();
  writeFiller(writer, 2 * LIMIT);
  // The WAL stays (the other connection is open); the guard's own connection is gone.
  other.query("SELECT count(*) FROM filler").get();
  files.untrack(writer);
  writer.close();
  const stop = startWalGuard(writer, {
    limitBytes: LIMIT,
    logger: createLogger({ level: "info", destination: logs }),
    intervalMs: 10,
  });
  try {
    const deadline = Date.now() + 5_000;
    while (logs.entries.length < 2 && Date.now() < deadline) await Bun.sleep(10);
    expect(logs.entries.slice(0, 2).map((entry) => entry.msg)).toEqual([
      "WAL checkpoint failed",
      "WAL checkpoint failed",
    ]);
  } finally {
    stop();
  }
});

test("with truncation off (WAL_TRUNCATE_MB=0) the guard still looks, and tells each look's size, but never truncates", async () => {
  const { path, writer } = twoConnections();
  writer.run("PRAGMA wal_autocheckpoint = 0");
  writeFiller(writer, 2 * LIMIT);
  const sizes: number[] = [];
  const logs = new LogCapture();
  const stop = startWalGuard(writer, {
    limitBytes: 0,
    logger: createLogger({ level: "info", destination: logs }),
    intervalMs: 10,
    onLook: (bytes) => sizes.push(bytes),
  });
  try {
    const deadline = Date.now() + 5_000;
    while (sizes.length < 3 && Date.now() < deadline) await Bun.sleep(10);
    expect(sizes.length).toBeGreaterThanOrEqual(3);
    for (const size of sizes) expect(size).toBe(walSize(path));
    expect(walSize(path)).toBeGreaterThan(2 * LIMIT);
    expect(logs.lines).toEqual([]);
  } finally {
    stop();
  }
});
