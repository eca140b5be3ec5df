/**
 * Elysia 1.4 serves a route whose handler is a plain Response (the docs page) without any of its
 * hooks once global parse, transform, beforeHandle and afterHandle hooks all exist (compose tests
 * that all four exist where it means none). No stage may add the missing kind lightly: this is
 * how such a change shows.
 */
import { afterEach, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

test("a route whose handler is a plain Response (the docs page) still passes every stage", async () => {
  current = buildTestApp();
  const response = await send(current, "/docs");
  expect(response.status).toBe(200);
  for (const header of ["x-request-id", "content-security-policy", "ratelimit-policy"]) {
    expect({ header, present: response.headers.has(header) }).toEqual({ header, present: true });
  }
  const line = current.logs.entries.find((entry) => entry.msg === "request");
  expect(line).toMatchObject({ route: "/docs", status: 200 });
});
