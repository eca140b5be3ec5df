/**
 * Elysia reads each lifecycle hook's source to decide what to parse on every request: one global
 * hook that uses its context whole (passes it to a function, or reads `cookie`, `headers`, `query`)
 * makes every request of every route turn all of its headers into an object, parse its cookies
 * (and await that) and parse its query string, which no early stage needs. (The error handler did
 * this until it destructured its context: ~10 % of a small request's CPU.)
 */
import { afterEach, expect, test } from "bun:test";
import { sucrose } from "elysia/sucrose";
import { buildTestApp, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const NOTHING = {
  query: false,
  headers: false,
  body: false,
  cookie: false,
  set: false,
  server: false,
  url: false,
  route: false,
  path: false,
};
// `server` is defined on every request's context by a getter when any hook reads it.
const PER_REQUEST_PARSING = ["cookie", "headers", "query", "body", "server"] as const;

type Hook = { fn: (...args: never[]) => unknown };

test("no global hook makes every request parse its cookies, headers, query or body, or define its server", () => {
  current = buildTestApp();
  const events = (current.app as unknown as { event: Record<string, Hook[] | undefined> }).event;
  const offenders: string[] = [];
  let hooks = 0;
  for (const kind of [
    "request",
    "parse",
    "beforeHandle",
    "afterHandle",
    "mapResponse",
    "afterResponse",
    "error",
  ]) {
    for (const hook of events[kind] ?? []) {
      hooks++;
      const inference: Record<string, boolean> = {
        ...sucrose({ [kind]: [hook] } as never, { ...NOTHING }),
      };
      const parsed = PER_REQUEST_PARSING.filter((what) => inference[what]);
      if (parsed.length > 0) offenders.push(`${kind} ${hook.fn.name}: ${parsed.join(", ")}`);
    }
  }
  expect(hooks).toBeGreaterThan(10);
  expect(offenders).toEqual([]);
});

test("a route that reads none of them compiles to a handler that parses none of them", () => {
  current = buildTestApp();
  const route = current.app.routes.find((r) => r.method === "GET" && r.path === "/health")!;
  const compiled = String((route as unknown as { compile(): unknown }).compile());
  expect(compiled).not.toContain("parseCookie(");
  expect(compiled).not.toContain("headers.toJSON()");
  expect(compiled).not.toContain("parseQuery");
  expect(compiled).not.toContain("'server'");
});
