/**
 * The strict-body check reads the body the request guard parsed, in `transform` (before Elysia's
 * validation converts or cleans it), and raises its refusal before the handler: Elysia's own
 * validation errors still come first, and one request's refusal never reaches another.
 */
import { afterEach, expect, test } from "bun:test";
import { t } from "elysia";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function strictApp() {
  current = buildTestApp({ routeClasses: [{ routes: ["POST /api/test/strict"] }] });
  const app = current.app.post("/api/test/strict", ({ body }) => ({ got: body }), {
    public: true,
    body: t.Object({ count: t.Integer(), name: t.String() }),
  });
  return { ...current, app };
}

async function post(target: ReturnType<typeof strictApp>, body: string) {
  const response = await send(target, "/api/test/strict", { body });
  const json = (await response.json()) as { code?: string; errors?: { field: string }[] };
  return { status: response.status, code: json.code, fields: json.errors?.map((e) => e.field) };
}

test("what Elysia's validation refuses is reported as before, ahead of the strict check", async () => {
  const target = strictApp();
  // Both fail: the missing name (Elysia) is what the client is told, not the string count.
  expect(await post(target, '{"count":"1"}')).toEqual({
    status: 422,
    code: "VALIDATION_FAILED",
    fields: ["body/name"],
  });
});

test("what only the strict check refuses is refused as sent, not as Elysia converted it", async () => {
  const target = strictApp();
  expect(await post(target, '{"count":"1","name":"x"}')).toMatchObject({
    status: 422,
    fields: ["body/count"],
  });
  expect(await post(target, '{"count":1,"name":"x","extra":true}')).toMatchObject({
    status: 422,
    fields: ["body/extra"],
  });
  expect(await post(target, '{"count":1,"name":"x","__proto__":{"a":1}}')).toMatchObject({
    status: 422,
    fields: ["body"],
  });
});

test("a refused body never follows the next request", async () => {
  const target = strictApp();
  for (let round = 0; round < 3; round++) {
    expect((await post(target, '{"count":"1","name":"x"}')).status).toBe(422);
    const ok = await send(target, "/api/test/strict", { body: '{"count":2,"name":"y"}' });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ got: { count: 2, name: "y" } });
  }
});
