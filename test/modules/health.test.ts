import { afterEach, expect, test } from "bun:test";
import { statfsSync } from "node:fs";
import { dirname, join } from "node:path";
import { Elysia } from "elysia";
import { checkDiskRoom, freeBytesAt, MIN_FREE_BYTES } from "../../src/db/disk-space";
import { buildTestApp, send, TEST_JWT_SECRET, type TestApp, tempDir } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  try {
    current?.close();
  } catch {}
  current = null;
});

test("GET /health answers ok", async () => {
  current = buildTestApp();
  const response = await send(current, "/health");
  expect(response.status).toBe(200);
  expect(await response.json()).toEqual({ status: "ok" });
});

test("GET /ready reports the database up with a real query", async () => {
  current = buildTestApp();
  const response = await send(current, "/ready");
  expect(response.status).toBe(200);
  const body = (await response.json()) as { status: string; checks: Record<string, unknown> };
  expect(body.status).toBe("ready");
  expect(body.checks.database).toMatchObject({ status: "up" });
});

test("GET /ready is 503 with the failing dependency when the database is gone", async () => {
  current = buildTestApp();
  current.db.$client.close();
  const response = await send(current, "/ready");
  expect(response.status).toBe(503);
  const body = (await response.json()) as {
    status: string;
    checks: { database: { status: string; error: string } };
  };
  expect(body.status).toBe("unavailable");
  expect(body.checks.database.status).toBe("down");
  expect(body.checks.database.error).toBeString();
});

test("GET /ready is 503 while the database's filesystem is nearly full, and ready again once there is room", async () => {
  let free = 10 * 1024 * 1024;
  const asked: string[] = [];
  current = buildTestApp({
    freeDiskBytes: (directory) => {
      asked.push(directory);
      return free;
    },
  });
  const full = await send(current, "/ready");
  expect(full.status).toBe(503);
  const body = (await full.json()) as { checks: { database: { status: string; error: string } } };
  expect(body.checks.database).toMatchObject({
    status: "down",
    error: "disk nearly full: 10 MB free where the database lives, under 64 MB",
  });
  // Asked of the directory that holds the database (its -wal and -shm files live there too).
  expect(asked).toEqual([dirname(current.databasePath)]);
  // Serving goes on: only readiness reports it.
  expect((await send(current, "/health")).status).toBe(200);

  free = 64 * 1024 * 1024;
  expect((await send(current, "/ready")).status).toBe(200);
});

test("the free space /ready reads is the filesystem's, as statfs gives it to this user", () => {
  const dir = tempDir();
  try {
    // Other writers on the filesystem move its free space between two reads (a CI run failed on
    // one block of 4 KiB), so the figure is compared within 1 MiB: the space kept for root alone
    // (`bfree` against `bavail`), another filesystem's figure or a unit slip differ by far more.
    const { bavail, bsize } = statfsSync(dir.path);
    expect(Math.abs(freeBytesAt(dir.path) - bavail * bsize)).toBeLessThan(1024 * 1024);
    expect(() => checkDiskRoom(join(dir.path, "app.db"), () => MIN_FREE_BYTES - 1)).toThrow(
      "disk nearly full",
    );
    expect(() => checkDiskRoom(":memory:", () => 0)).not.toThrow();
  } finally {
    dir.remove();
  }
});

test("a failing check's message reaches /ready scrubbed of secrets, escaped and cut", async () => {
  current = buildTestApp({
    extraFeatures: [
      {
        name: "leaky",
        routeClasses: [],
        routes: () => new Elysia({ name: "leaky" }),
        readiness: {
          leaky: () => {
            throw new Error(
              `connect redis://:${TEST_JWT_SECRET}@cache failed\u2028${"A".repeat(2000)}\nsecond line`,
            );
          },
        },
      },
    ],
  });
  const response = await send(current, "/ready");
  expect(response.status).toBe(503);
  const text = await response.text();
  expect(text).not.toContain(TEST_JWT_SECRET);
  expect(text).not.toContain("second line");
  const error = (JSON.parse(text) as { checks: { leaky: { error: string } } }).checks.leaky.error;
  expect(error.startsWith("connect redis://:[REDACTED]@cache failed\\u2028AAA")).toBe(true);
  // Cut at 512 characters, then the line separator escaped (six characters for one).
  expect(error.length).toBe(512 + 5 + 1);
  expect(error.endsWith("…")).toBe(true);
});
