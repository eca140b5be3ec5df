/**
 * Elysia reads each hook's source (sucrose) to decide what to parse per request, and the hooks of
 * every stage that runs on every route (`.as("global")`) count for every route. One hook that
 * seems to take the whole context (`= context,` after Bun's transpiler joins two consts, or
 * `return context…`) makes every request pay for parsing its cookies (an await), query and headers.
 * No stage reads those through Elysia: they read `request.headers` themselves.
 */
import { afterEach, expect, test } from "bun:test";
import { sucrose } from "elysia/sucrose";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

type Hook = { fn?: unknown } | ((...args: unknown[]) => unknown);

test("no global hook makes Elysia parse cookies, query, headers or body for every route", () => {
  current = buildTestApp();
  const events = (current.app as unknown as { event: Record<string, Hook[] | undefined> }).event;
  const parsed: string[] = [];
  let hooks = 0;
  for (const [kind, list] of Object.entries(events)) {
    for (const hook of list ?? []) {
      const fn = typeof hook === "function" ? hook : hook.fn;
      if (typeof fn !== "function") continue;
      hooks++;
      const inference = sucrose({ [kind]: [fn] } as Parameters<typeof sucrose>[0]);
      for (const part of ["cookie", "query", "headers", "body"] as const) {
        if (inference[part]) parsed.push(`${kind} ${fn.name}: ${part}`);
      }
    }
  }
  expect(hooks).toBeGreaterThan(10);
  expect(parsed).toEqual([]);
});

test("the check sees a hook that hands the whole context on", () => {
  const helper = (value: unknown) => value;
  const inference = sucrose({
    request: [(context: unknown) => helper(context)],
  } as unknown as Parameters<typeof sucrose>[0]);
  expect(inference.cookie).toBe(true);
});

test("a route whose handler is a plain Response (the docs page) still passes every stage", async () => {
  // Elysia 1.4 serves such a route without any of its hooks once global parse, transform,
  // beforeHandle and afterHandle hooks all exist: no stage may add the missing kind lightly.
  current = buildTestApp();
  const response = await send(current, "/docs");
  expect(response.status).toBe(200);
  for (const header of ["x-request-id", "content-security-policy", "ratelimit-policy"]) {
    expect({ header, present: response.headers.has(header) }).toEqual({ header, present: true });
  }
});
