/**
 * Elysia decides from a hook's source text whether to `await` what it returns: an `async`
 * function, or one whose text holds `return f(`, `=> f(`, `async` or `await`, is awaited on every
 * request, and each such wait costs a request about a microsecond (bench, Performance). A hook
 * that never returns a promise must not read as one that may; the hooks that do wait are named.
 */
import { afterEach, expect, test } from "bun:test";
import { isAsync } from "elysia/compose";
import { buildTestApp, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/**
 * Hooks that may return a promise, by kind: they wait for the store, a credential not yet verified
 * or a body. The auth macro's `resolve` is not one: it hands on what `transform` authorized.
 */
const MAY_WAIT = new Set([
  "request enforceRateLimit",
  "parse parseJsonWithinLimit",
  "transform transform",
  "error toProblemResponse",
]);

type Hook = { fn?: (...args: unknown[]) => unknown } | ((...args: unknown[]) => unknown);

function hooksOf(events: Record<string, unknown> | undefined): [string, Hook][] {
  const found: [string, Hook][] = [];
  for (const [kind, hooks] of Object.entries(events ?? {})) {
    if (!Array.isArray(hooks)) continue;
    for (const hook of hooks as Hook[]) found.push([kind, hook]);
  }
  return found;
}

test("Elysia awaits only the hooks that can wait, on every route", () => {
  current = buildTestApp();
  const app = current.app as unknown as {
    event: Record<string, unknown>;
    router: { history: { method: string; path: string; hooks?: Record<string, unknown> }[] };
  };
  const awaited = new Set<string>();
  const hooks = [
    ...hooksOf(app.event),
    ...app.router.history.flatMap((route) => hooksOf(route.hooks)),
  ];
  for (const [kind, hook] of hooks) {
    const fn = typeof hook === "function" ? hook : hook.fn;
    if (typeof fn !== "function" || kind === "stop" || kind === "start") continue;
    if (isAsync(fn)) awaited.add(`${kind} ${fn.name}`);
  }
  expect([...awaited].filter((name) => !MAY_WAIT.has(name))).toEqual([]);
  // The request hooks that run on every request and never wait are seen as such.
  expect(awaited.has("request guardRequest")).toBe(false);
  expect(hooks.some(([kind, hook]) => kind === "beforeHandle" && nameOf(hook) === "resolve")).toBe(
    true,
  );
  expect(
    hooks.some(([kind, hook]) => kind === "beforeHandle" && nameOf(hook) === "refuseQueryAsSent"),
  ).toBe(true);
});

function nameOf(hook: Hook): string | undefined {
  return (typeof hook === "function" ? hook : hook.fn)?.name;
}
