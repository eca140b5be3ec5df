import { afterEach, expect, test } from "bun:test";
import { acceptableRequestId } from "../../src/plugins/request-id";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

test("every response carries a fresh X-Request-Id", async () => {
  current = buildTestApp();
  const first = await send(current, "/health");
  const second = await send(current, "/nope");
  const a = first.headers.get("x-request-id");
  const b = second.headers.get("x-request-id");
  expect(a).toMatch(/^[0-9a-f-]{36}$/);
  expect(b).toMatch(/^[0-9a-f-]{36}$/);
  expect(a).not.toBe(b);
});

test("a short safe incoming id is kept and logged", async () => {
  current = buildTestApp();
  const response = await send(current, "/health", { headers: { "x-request-id": "trace-abc.123" } });
  expect(response.headers.get("x-request-id")).toBe("trace-abc.123");
  const entry = current.logs.entries.find((e) => e.msg === "request");
  expect(entry?.requestId).toBe("trace-abc.123");
});

test.each([
  ["too long", "a".repeat(65)],
  ["spaces", "abc def"],
  ["log injection", 'x"}\n{"level":"fatal'],
  ["html", "<script>"],
  ["empty", ""],
])("an unsafe incoming id (%s) is replaced", async (_label, incoming) => {
  current = buildTestApp();
  const headers = new Headers();
  headers.set("x-request-id", incoming.replace(/\n/g, " "));
  const response = await send(current, "/health", { headers: Object.fromEntries(headers) });
  const id = response.headers.get("x-request-id")!;
  expect(id).not.toBe(incoming);
  expect(acceptableRequestId(id)).toBe(true);
});
