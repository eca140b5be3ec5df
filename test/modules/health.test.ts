import { afterEach, expect, test } from "bun:test";
import { Elysia } from "elysia";
import { buildTestApp, send, TEST_JWT_SECRET, type TestApp } from "../support/app";

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
