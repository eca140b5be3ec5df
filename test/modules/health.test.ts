import { afterEach, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../support/app";

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
