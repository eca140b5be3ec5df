import { afterEach, describe, expect, test } from "bun:test";
import { createLogger } from "../../src/logging/logger";
import { buildTestApp, failingLimiterStore, LogCapture, send, type TestApp } from "../support/app";

const INTERVAL_MS = 120;
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function collecting(level: "info" | "error", repeatIntervalMs: number) {
  const logs = new LogCapture();
  return { logs, logger: createLogger({ level, destination: logs, repeatIntervalMs }) };
}

describe("a line a lasting fault repeats", () => {
  test("the first is written whole, the rest of the interval counted, and one line says how many", async () => {
    const { logs, logger } = collecting("info", INTERVAL_MS);
    const down = logger.repeating("store down");
    for (let i = 1; i <= 5; i++)
      down.error({ err: new Error("locked"), requestId: `r${i}` }, "store failed");
    expect(logs.entries).toHaveLength(1);
    expect(logs.entries[0]).toMatchObject({ level: "error", msg: "store failed", requestId: "r1" });
    expect((logs.entries[0]!.err as { message: string }).message).toBe("locked");

    await pause(INTERVAL_MS * 1.5);
    expect(logs.entries).toHaveLength(2);
    expect(logs.entries[1]).toMatchObject({
      level: "error",
      repeated: "store down",
      count: 4,
      seconds: INTERVAL_MS / 1000,
      lastRequestId: "r5",
    });
    expect(logs.entries[1]!.msg).toContain("store down: 4 more in the last");
  });

  test("a fault that lasts writes one summary an interval, and a quiet key is written whole again", async () => {
    const { logs, logger } = collecting("info", INTERVAL_MS);
    const down = logger.repeating("store down");
    down.warn({ requestId: "a" }, "store failed");
    await pause(INTERVAL_MS * 0.5);
    down.warn({ requestId: "b" }, "store failed");
    await pause(INTERVAL_MS * 0.8);
    // The first interval ended with one counted: summed up, and the next interval counts on.
    down.warn({ requestId: "c" }, "store failed");
    down.warn({ requestId: "d" }, "store failed");
    expect(logs.entries.map((entry) => entry.requestId ?? entry.lastRequestId)).toEqual(["a", "b"]);
    expect(logs.entries[1]).toMatchObject({ level: "warn", count: 1 });
    await pause(INTERVAL_MS * 1.2);
    expect(logs.entries.at(-1)).toMatchObject({ count: 2, lastRequestId: "d" });
    // An interval with none: the key is forgotten, and its next line is written whole.
    await pause(INTERVAL_MS * 1.5);
    const before = logs.entries.length;
    down.warn({ requestId: "e" }, "store failed");
    expect(logs.entries).toHaveLength(before + 1);
    expect(logs.entries.at(-1)).toMatchObject({ msg: "store failed", requestId: "e" });
  });

  test("keys are counted apart, another logger's lines are not, and a flush writes what is counted", () => {
    const { logs, logger } = collecting("info", 60_000);
    const child = logger.child({ component: "limiter" });
    for (let i = 0; i < 3; i++) {
      logger.repeating("one").error({ requestId: `one-${i}` }, "one failed");
      child.repeating("two").error({ requestId: `two-${i}` }, "two failed");
      logger.error({ requestId: `plain-${i}` }, "not repeating");
    }
    expect(logs.entries.map((entry) => entry.msg)).toEqual([
      "one failed",
      "two failed",
      "not repeating",
      "not repeating",
      "not repeating",
    ]);
    // A child shares its parent's count: the same key from either is one run of lines.
    child.repeating("one").error({ requestId: "one-child" }, "one failed");
    logger.flush();
    const summed = logs.entries.filter((entry) => entry.repeated !== undefined);
    expect(summed).toMatchObject([
      { repeated: "one", count: 3, lastRequestId: "one-child" },
      { repeated: "two", count: 2, lastRequestId: "two-2" },
    ]);
    // Flushed: nothing is counted any more, so the next line is whole.
    logger.repeating("one").error({ requestId: "after" }, "one failed");
    expect(logs.entries.at(-1)).toMatchObject({ msg: "one failed", requestId: "after" });
  });

  test("a level the logger leaves out is neither written nor counted", () => {
    const { logs, logger } = collecting("error", 60_000);
    for (let i = 0; i < 3; i++) logger.repeating("locked").warn({ requestId: `${i}` }, "locked");
    logger.flush();
    expect(logs.entries).toHaveLength(0);
  });
});

test("a fault that changes while lines repeat is written whole: each error's kind is its own run (probe 30c F1)", async () => {
  let failure = new Error("Connection is closed.");
  const store = failingLimiterStore("unused");
  store.check = () => Promise.reject(failure);
  current = buildTestApp({ limiter: store, logRepeatIntervalMs: 60_000 });
  const login = () =>
    send(current!, "/api/auth/login", {
      body: { email: "a@b.test", password: "whatever it is 1" },
    });
  for (let i = 0; i < 3; i++) expect((await login()).status).toBe(503);
  // Redis back, but full: another fault, behind the same message.
  failure = new Error("OOM command not allowed when used memory > 'maxmemory' (used 1048576).");
  for (let i = 0; i < 3; i++) expect((await login()).status).toBe(503);
  failure = new Error("OOM command not allowed when used memory > 'maxmemory' (used 2097152).");
  expect((await login()).status).toBe(503);
  const whole = current.logs.entries.filter((e) => e.msg === "rate-limit store failed");
  expect(whole.map((e) => (e.err as { message: string }).message)).toEqual([
    "Connection is closed.",
    "OOM command not allowed when used memory > 'maxmemory' (used 1048576).",
  ]);
  current.logger.flush();
  // The numbers in a message do not make a new kind; a shutdown says how long it counted.
  const summed = current.logs.entries.filter((e) => e.repeated !== undefined);
  expect(summed.map((e) => e.count)).toEqual([2, 3]);
  expect(summed[1]!.repeated).toContain(
    "OOM command not allowed when used memory > 'maxmemory' (used #)",
  );
  for (const line of summed) expect(line.seconds as number).toBeLessThan(60);
});

describe("the service while its limiter store is down", () => {
  test("a flood of requests writes one failure line and one count each interval, beside every access line", async () => {
    current = buildTestApp({
      limiter: failingLimiterStore("connection closed"),
      logRepeatIntervalMs: INTERVAL_MS,
    });
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) {
      const response = await send(current, "/api/auth/login", {
        body: { email: "a@b.test", password: "whatever it is 1" },
        headers: { "x-request-id": `flood-${i}` },
      });
      statuses.push(response.status);
    }
    expect(new Set(statuses)).toEqual(new Set([503]));
    const failures = () => current!.logs.entries.filter((e) => e.msg === "rate-limit store failed");
    expect(failures()).toHaveLength(1);
    expect(failures()[0]).toMatchObject({ requestId: "flood-0", failClosed: true });
    // Each request still has its access line, with its id and status.
    const access = current.logs.entries.filter((e) => e.route === "/api/auth/login");
    expect(access.map((e) => e.requestId)).toEqual(statuses.map((_, i) => `flood-${i}`));
    expect(access.every((e) => e.status === 503)).toBe(true);

    await pause(INTERVAL_MS * 1.5);
    const summed = current.logs.entries.filter((e) => e.repeated !== undefined);
    expect(summed).toMatchObject([{ level: "error", count: 19, lastRequestId: "flood-19" }]);
    // Keyed by what failed and how: a different fault would be written whole (probe 30c F1).
    expect(summed[0]!.repeated).toBe("rate-limit store failed, refused — Error: connection closed");
    const metrics = await (await send(current, "/metrics")).text();
    expect(metrics).toContain('rate_limit_store_errors_total{mode="closed"} 20');
  });

  const register = (target: TestApp, i: number, tag: string) =>
    send(target, "/api/auth/register", {
      body: { email: `${tag}-${i}@example.test`, password: "a long enough passphrase 42!" },
      headers: { "x-request-id": `${tag}-${i}` },
    });

  test("a database that refuses writes logs the first refusal of a route whole and counts the rest", async () => {
    // Each registration hashes a password first: an interval long enough for the four.
    current = buildTestApp({
      logRepeatIntervalMs: 60_000,
      env: { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" },
    });
    current.db.$client.run("PRAGMA query_only = 1");
    for (let i = 0; i < 4; i++) expect((await register(current, i, "full")).status).toBe(503);
    const unavailable = current.logs.entries.filter((e) => e.msg === "database unavailable");
    expect(unavailable).toHaveLength(1);
    expect(unavailable[0]).toMatchObject({ requestId: "full-0", route: "/api/auth/register" });
    current.logger.flush();
    expect(
      current.logs.entries.filter(
        (e) => e.repeated === "database unavailable: /api/auth/register SQLITE_READONLY",
      ),
    ).toMatchObject([{ level: "error", count: 3, lastRequestId: "full-3" }]);
  });

  test("a fault a client can trigger at will writes its stack once an interval per route and kind", async () => {
    // Each registration hashes a password first: an interval long enough for the four.
    current = buildTestApp({
      logRepeatIntervalMs: 60_000,
      env: { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" },
    });
    // Not a storage failure: a fault the service does not expect, answered 500.
    current.db.$client.run(
      "CREATE TRIGGER broken BEFORE INSERT ON users BEGIN SELECT RAISE(ABORT, 'unexpected'); END",
    );
    for (let i = 0; i < 4; i++) expect((await register(current, i, "bug")).status).toBe(500);
    const unhandled = current.logs.entries.filter((e) => e.msg === "unhandled error");
    expect(unhandled).toHaveLength(1);
    expect(unhandled[0]).toMatchObject({ requestId: "bug-0", route: "/api/auth/register" });
    current.logger.flush();
    const summed = current.logs.entries.filter((e) => e.repeated !== undefined);
    expect(summed).toHaveLength(1);
    expect(summed[0]).toMatchObject({ count: 3, lastRequestId: "bug-3" });
    expect(summed[0]!.repeated).toStartWith("unhandled error: /api/auth/register ");
  });
});
