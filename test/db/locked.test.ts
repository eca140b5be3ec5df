/**
 * Another process holds the database's write lock for seconds. The served app must keep its event
 * loop running: /health answers at once, the limiter fails open (public routes) or closed (login)
 * within a short bounded wait, /ready says the database is not writable, and nothing is lost: the
 * audit events queued meanwhile are written once the lock goes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { probeWritable } from "../../src/db/busy";
import type { RunningServer } from "../../src/server";
import { buildTestApp, serveInProcess, type TestApp } from "../support/app";
import { bearer, signUp } from "../support/auth";

const HOLD_MS = 4_000;

/** A second process that takes `BEGIN EXCLUSIVE` on the file and holds it for `holdMs`. */
async function holdWriteLock(path: string, holdMs: number) {
  const script = `
    import { Database } from "bun:sqlite";
    const db = new Database(process.env.LOCK_DB);
    db.run("PRAGMA busy_timeout = 5000");
    db.run("BEGIN EXCLUSIVE");
    console.log("locked");
    await Bun.sleep(Number(process.env.HOLD_MS));
    db.run("COMMIT");
    console.log("released");
  `;
  const proc = Bun.spawn(["bun", "-e", script], {
    env: { PATH: process.env.PATH ?? "", LOCK_DB: path, HOLD_MS: String(holdMs) },
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  while (!seen.includes("locked")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the lock holder exited before locking");
    seen += decoder.decode(value);
  }
  const lockedAt = performance.now();
  const released = (async () => {
    while (!seen.includes("released")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += decoder.decode(value);
    }
    return performance.now();
  })();
  return { lockedAt, released, proc, isReleased: () => seen.includes("released") };
}

/** Records the longest gap between ticks of a 10 ms timer: how long the event loop was blocked. */
function eventLoopWatch() {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 10);
  return {
    stop() {
      clearInterval(timer);
      return longest;
    },
  };
}

describe("while another process holds the write lock", () => {
  let target: TestApp;
  let server: RunningServer;
  const url = (path: string) => new URL(path, server.url).toString();
  const timed = async (path: string, init?: RequestInit) => {
    const started = performance.now();
    const response = await fetch(url(path), init);
    const body = await response.text();
    return {
      status: response.status,
      body,
      at: performance.now(),
      ms: performance.now() - started,
    };
  };
  const login = () =>
    timed("/api/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "nobody@example.test", password: "not-the-password" }),
    });

  beforeAll(async () => {
    target = buildTestApp({
      env: { RATE_LIMIT_PER_MINUTE: "100000", RATE_LIMIT_BURST: "100000" },
    });
    server = serveInProcess(target);
    // Warm up every path used below, so compilation is not measured.
    expect((await timed("/health")).status).toBe(200);
    expect((await timed("/ready")).status).toBe(200);
    expect((await login()).status).toBe(401);
    expect((await timed("/api/auth/me")).status).toBe(401);
  });
  afterAll(async () => {
    await server?.shutdown("test over");
    target?.close();
  });

  test("health, limiter and readiness answer well before the lock goes; nothing is lost", async () => {
    const lock = await holdWriteLock(target.databasePath, HOLD_MS);
    const watch = eventLoopWatch();

    const healths: Awaited<ReturnType<typeof timed>>[] = [];
    const healthLoop = (async () => {
      for (let i = 0; i < 10; i++) {
        healths.push(await timed("/health"));
        await Bun.sleep(50);
      }
    })();
    const [ready, closed, opens, rejected] = await Promise.all([
      timed("/ready"),
      login(),
      // Many concurrent public requests: their checks wait for the lock together, then fail open.
      Promise.all(Array.from({ length: 20 }, () => timed("/api/auth/me"))),
      // Refused by the request guard after the limiter let it through; its audit event is queued.
      timed("/a/%00/b"),
    ]);
    await healthLoop;
    const blockedMs = watch.stop();
    const stillLocked = !lock.isReleased();
    const releasedAt = await lock.released;
    await lock.proc.exited;

    // Everything was answered while the lock was still held.
    expect(stillLocked).toBe(true);
    for (const answer of [ready, closed, ...opens, rejected, ...healths]) {
      expect(answer.at).toBeLessThan(releasedAt);
    }
    // /health never waits for the database (one slow answer on a busy machine is allowed).
    const healthTimes = healths.map((h) => h.ms).sort((a, b) => a - b);
    expect(healths.every((h) => h.status === 200)).toBe(true);
    expect(healthTimes[Math.floor(healthTimes.length / 2)]!).toBeLessThan(100);
    expect(healthTimes[healthTimes.length - 1]!).toBeLessThan(1_000);
    // No single stretch of blocked event loop near the old 5 s busy timeout.
    expect(blockedMs).toBeLessThan(250);

    // /ready: the database answers reads but cannot be written.
    expect(ready.status).toBe(503);
    const readiness = JSON.parse(ready.body) as {
      status: string;
      checks: { database: { status: string; error: string } };
    };
    expect(readiness.status).toBe("unavailable");
    expect(readiness.checks.database.status).toBe("down");
    expect(readiness.checks.database.error).toBe("not writable: database is locked");

    // Login fails closed, public routes fail open, each within the limiter's bounded wait.
    expect(closed.status).toBe(503);
    expect(JSON.parse(closed.body).code).toBe("SERVICE_UNAVAILABLE");
    expect(closed.ms).toBeLessThan(2_000);
    for (const open of opens) {
      expect(open.status).toBe(401);
      expect(open.ms).toBeLessThan(2_000);
    }
    expect(rejected.status).toBe(400);
    expect(JSON.parse(rejected.body).code).toBe("BAD_PATH");

    // After the lock: ready again, the limiter decides again, the queued audit event is written.
    expect((await timed("/ready")).status).toBe(200);
    expect((await login()).status).toBe(401);
    target.services.audit.flush();
    const rows = target.db.$client
      .query("SELECT route FROM audit_events WHERE type = 'request.rejected'")
      .all() as { route: string }[];
    expect(rows).toContainEqual({ route: "GET /a/%00/b" });
  }, 20_000);

  test("a request whose own write meets the lock answers 503 with Retry-After, not 500", async () => {
    const admin = await signUp(target, { role: "admin" });
    const lock = await holdWriteLock(target.databasePath, 2_500);
    // Listing blocks is audited before the response (admin.* must not be lost): that write meets
    // the lock after the short busy timeout.
    const listed = await fetch(url("/api/admin/blocks"), { headers: bearer(admin.accessToken) });
    const answeredAt = performance.now();
    const stillLocked = !lock.isReleased();
    expect(listed.status).toBe(503);
    expect(listed.headers.get("retry-after")).toBe("1");
    expect(((await listed.json()) as { code: string }).code).toBe("SERVICE_UNAVAILABLE");
    expect(stillLocked).toBe(true);
    expect(answeredAt - lock.lockedAt).toBeLessThan(2_000);
    expect(() => probeWritable(target.db.$client)).toThrow("not writable: database is locked");

    await lock.released;
    await lock.proc.exited;
    // The event was kept and is written once the lock has gone; the same request now succeeds.
    target.services.audit.flush();
    const count = () =>
      (
        target.db.$client
          .query("SELECT count(*) AS n FROM audit_events WHERE type = 'admin.blocks.listed'")
          .get() as { n: number }
      ).n;
    expect(count()).toBe(1);
    const again = await fetch(url("/api/admin/blocks"), { headers: bearer(admin.accessToken) });
    expect(again.status).toBe(200);
    expect(count()).toBe(2);
  }, 20_000);
});

// A file this process may only read (mode 0444, another owner) is opened read-only by SQLite
// without a word, and the write lock is still taken: only a write fails. A connection opened
// read-only is in the same state.
test("a connection that may only read the file is not writable, though it takes the lock", () => {
  const target = buildTestApp();
  try {
    const { Database } = require("bun:sqlite") as typeof import("bun:sqlite");
    const readOnly = new Database(target.databasePath, { readonly: true });
    try {
      readOnly.run("BEGIN IMMEDIATE");
      readOnly.run("ROLLBACK");
      expect(() => probeWritable(readOnly)).toThrow(
        "not writable: attempt to write a readonly database",
      );
      // The probe leaves no transaction open behind it.
      expect(readOnly.inTransaction).toBe(false);
    } finally {
      readOnly.close();
    }
    const writable = target.db.$client;
    writable.run("PRAGMA user_version = 7");
    probeWritable(writable);
    expect(writable.query("PRAGMA user_version").values()).toEqual([[7]]);
    expect(writable.inTransaction).toBe(false);
  } finally {
    target.close();
  }
});
