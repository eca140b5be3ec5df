/**
 * No input reaches a 500: every registered route, as an admin (who passes every auth check) and
 * anonymously, with hostile values for each query parameter, path parameter and body field its
 * schema declares, and bodies of the wrong shape. Each answer is below 500 and, when an error,
 * problem+json with a stable code.
 */
import { afterEach, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "./support/app";
import { bearer, signUp } from "./support/auth";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

interface Schema {
  properties?: Record<string, unknown>;
}

interface RegisteredRoute {
  method: string;
  path: string;
  hooks?: { query?: Schema; body?: Schema };
}

const HOSTILE_SCALARS = [
  "1.5",
  "-1",
  "0",
  "1e400",
  "NaN",
  "Infinity",
  "99999999999999999999999",
  "abc",
  "",
  " ",
  "null",
  "[]",
  "{}",
  "\u0000",
  "'; DROP TABLE users; --",
  "\ud800",
  "x".repeat(3000),
];

const HOSTILE_VALUES: unknown[] = [
  ...HOSTILE_SCALARS,
  1.5,
  -1,
  2 ** 53 + 1,
  1e308,
  true,
  null,
  [],
  [1, 2],
  {},
  { nested: { deeper: [] } },
  // Objects that cannot be turned into text: Elysia's validation message once answered 500.
  { toString: "x" },
  { valueOf: "x", toString: 1 },
  { hasOwnProperty: "x" },
  { toJSON: "x" },
];

const HOSTILE_BODIES: unknown[] = [
  "[]",
  '"text"',
  "42",
  "null",
  "true",
  "{}",
  '{"__proto__":{"x":1}}',
  '{"toString":"x"}',
  '{"\\u0074oString":{"toString":"x"}}',
];

/** Percent-encodes a value; a lone surrogate goes as the bytes a careless client would send. */
function encode(value: string): string {
  try {
    return encode(value);
  } catch {
    return "%ED%A0%80";
  }
}

async function expectNoServerError(label: string, response: Response) {
  const text = await response.text();
  expect({
    label,
    status: response.status < 500 ? "below 500" : `${response.status} ${text}`,
  }).toEqual({ label, status: "below 500" });
  if (response.status >= 400 && response.headers.get("content-length") !== "0" && text !== "") {
    expect(response.headers.get("content-type")).toContain("application/problem+json");
    expect((JSON.parse(text) as { code: string }).code).toMatch(/^[A-Z_]+$/);
  }
}

test("no query, path parameter or body value reaches a 500, as admin or anonymous", async () => {
  current = buildTestApp({
    env: { RATE_LIMIT_PER_MINUTE: "1000000", RATE_LIMIT_BURST: "1000000" },
  });
  const admin = await signUp(current, { role: "admin" });
  const routes = (current.app.routes as RegisteredRoute[])
    .filter((route) => route.method !== "WS")
    // Erasing the admin or ending its session would turn the rest into 401s: those go last.
    .sort(
      (a, b) =>
        Number(a.path === "/api/me" || a.path.endsWith("/logout")) -
        Number(b.path === "/api/me" || b.path.endsWith("/logout")),
    );
  let sent = 0;
  for (const route of routes) {
    const queryNames = Object.keys(route.hooks?.query?.properties ?? {});
    const bodyNames = Object.keys(route.hooks?.body?.properties ?? {});
    const hasBody = route.method !== "GET" && route.method !== "HEAD";
    const paramPaths = route.path.includes(":")
      ? HOSTILE_SCALARS.filter((v) => v !== "" && !v.includes("\u0000")).map((value) =>
          route.path.replace(/:[^/]+/g, encode(value)),
        )
      : [route.path];
    for (const headers of [bearer(admin.accessToken), {}]) {
      for (const path of paramPaths) {
        const response = await send(current, path, {
          method: route.method,
          headers,
          body: hasBody ? {} : undefined,
        });
        await expectNoServerError(`${route.method} ${path}`, response);
        sent++;
      }
      for (const name of queryNames) {
        for (const value of HOSTILE_SCALARS) {
          const path = `${route.path.replace(/:[^/]+/g, "1")}?${name}=${encode(value)}&${name}=2`;
          const response = await send(current, path, {
            method: route.method,
            headers,
            body: hasBody ? {} : undefined,
          });
          await expectNoServerError(`${route.method} ${path}`, response);
          sent++;
        }
      }
      if (!hasBody) continue;
      for (const raw of HOSTILE_BODIES) {
        const path = route.path.replace(/:[^/]+/g, "1");
        const response = await send(current, path, { method: route.method, headers, body: raw });
        await expectNoServerError(`${route.method} ${path} ${raw}`, response);
        sent++;
      }
      for (const name of bodyNames) {
        for (const value of HOSTILE_VALUES) {
          const path = route.path.replace(/:[^/]+/g, "1");
          const response = await send(current, path, {
            method: route.method,
            headers,
            body: { [name]: value },
          });
          await expectNoServerError(
            `${route.method} ${path} ${name}=${JSON.stringify(value).slice(0, 20)}`,
            response,
          );
          sent++;
        }
      }
    }
  }
  expect(sent).toBeGreaterThan(500);
}, 120_000);

test("GET /api/admin/audit?limit=1.5 is 422, not a database error", async () => {
  current = buildTestApp();
  const admin = await signUp(current, { role: "admin" });
  for (const query of [
    "limit=1.5",
    "cursor=2.5",
    "limit=0",
    "limit=501",
    "cursor=-1.5",
    "cursor=--1",
    "limit=1e3",
  ]) {
    const response = await send(current, `/api/admin/audit?${query}`, {
      headers: bearer(admin.accessToken),
    });
    const body = (await response.json()) as { code: string };
    expect({ query, status: response.status, code: body.code }).toEqual({
      query,
      status: 422,
      code: "VALIDATION_FAILED",
    });
  }
  expect(
    (await send(current, "/api/admin/audit?limit=2", { headers: bearer(admin.accessToken) }))
      .status,
  ).toBe(200);
});
