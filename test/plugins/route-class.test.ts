/**
 * Route classes: every registered route has one, every class names a route, and every spelling of
 * a route that reaches its handler is counted against that route's policy.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { routeClassesOf } from "../../src/app";
import { AUTH_DETAIL_KEY } from "../../src/plugins/auth";
import { createRouteClassTable, UNMATCHED_CLASS } from "../../src/plugins/route-class";
import { buildTestApp, send, serveInProcess, type TestApp } from "../support/app";
import { bearer, signUp } from "../support/auth";
import { rawHttp } from "../support/raw-http";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** The app's own table: the core's route classes and its features'. */
function tableOf(target: TestApp) {
  table = createRouteClassTable(routeClassesOf(target.services.features));
  return table;
}

interface RegisteredRoute {
  method: string;
  path: string;
  hooks?: { detail?: Record<string, unknown> };
}

const routesOf = (target: TestApp): RegisteredRoute[] =>
  (target.app.routes as RegisteredRoute[]).filter((route) => route.method !== "WS");

/** A concrete path for a registered pattern: each `:param` becomes a plausible value. */
const concrete = (path: string) => path.replace(/:[^/]+/g, "12345");

/** Every spelling that Elysia routes to the same handler as `METHOD path`. */
function spellings(method: string, path: string): { method: string; path: string }[] {
  const forms = [
    { method, path },
    { method, path: `${path}/` },
    { method, path: `${path}?probe=1` },
    { method, path: `${path}/?probe=1` },
    { method, path: `${path}/.` },
    { method, path: `${path}/%2e` },
  ];
  if (method === "GET") forms.push({ method: "HEAD", path }, { method: "HEAD", path: `${path}/` });
  return forms;
}

let table = createRouteClassTable([]);

/** The RateLimit-Policy header a request of the class carries, limits raised to 100,000. */
const policyHeaderOf = (resolved: ReturnType<typeof table.classify>) =>
  resolved.probe
    ? null
    : resolved.policy === null
      ? '"default";q=100000;w=60'
      : expect.stringContaining(`"${resolved.policy}";`);

describe("the route-class table", () => {
  test("every registered route has a class, and every class names a registered route", () => {
    current = buildTestApp();
    tableOf(current);
    const routes = routesOf(current);
    expect(routes.length).toBeGreaterThan(15);
    for (const route of routes) {
      expect({
        route: `${route.method} ${route.path}`,
        name: table.classify(route.method, route.path).name,
      }).not.toEqual({ route: `${route.method} ${route.path}`, name: UNMATCHED_CLASS.name });
    }
    for (const { route: declared } of table.declared) {
      const one = createRouteClassTable([{ routes: [declared] }]);
      const named = routes.filter((r) => one.classify(r.method, r.path) !== UNMATCHED_CLASS);
      expect({ declared, names: named.length > 0 }).toEqual({ declared, names: true });
    }
  });

  test("every spelling of every route gets the class of the route as registered", () => {
    current = buildTestApp();
    tableOf(current);
    for (const route of routesOf(current)) {
      const expected = table.classify(route.method, route.path);
      for (const spelling of spellings(route.method, route.path)) {
        const path = new URL(spelling.path, "http://localhost").pathname;
        expect({ ...spelling, class: table.classify(spelling.method, path).name }).toEqual({
          ...spelling,
          class: expected.name,
        });
      }
    }
  });

  test("a declaration that is not METHOD /path, or is declared twice, is refused", () => {
    expect(() => createRouteClassTable([{ routes: ["/no-method"] }])).toThrow(/METHOD \/path/);
    expect(() => createRouteClassTable([{ routes: ["GET /a"] }, { routes: ["GET /a"] }])).toThrow(
      /twice/,
    );
  });
});

describe("through the router", () => {
  test("each spelling that reaches a handler is counted against its route's policy", async () => {
    current = buildTestApp({
      env: { RATE_LIMIT_PER_MINUTE: "100000", RATE_LIMIT_BURST: "100000" },
    });
    let peer = 0;
    for (const route of routesOf(current)) {
      const resolved = table.classify(route.method, route.path);
      for (const spelling of spellings(route.method, concrete(route.path))) {
        const response = await send(current, spelling.path, {
          method: spelling.method,
          body: spelling.method === "GET" || spelling.method === "HEAD" ? undefined : {},
          peer: `198.51.100.${++peer % 250}`,
        });
        const seen = {
          route: `${spelling.method} ${spelling.path}`,
          routed: response.status !== 404 && response.status !== 405,
          policy: response.headers.get("ratelimit-policy"),
        };
        const policy = policyHeaderOf(resolved);
        expect(seen).toEqual({ route: seen.route, routed: true, policy });
      }
    }
  });

  test("register's 3 per address hold across every spelling and method", async () => {
    current = buildTestApp();
    const forms = [
      "/api/auth/register/",
      "/api/auth/register?x=1",
      "/api/auth/register/.",
      "/api/auth/register",
    ];
    const statuses: number[] = [];
    for (const [i, path] of forms.entries()) {
      const response = await send(current, path, {
        body: { email: `spelling${i}@example.test`, password: "violet-Harbor-quantum-73!" },
        peer: "203.0.113.7",
      });
      statuses.push(response.status);
    }
    expect(statuses).toEqual([201, 201, 201, 429]);
    expect(current.services.auth.findUserByEmail("spelling3@example.test")).toBeNull();
  });

  test("HEAD and a trailing slash count against the privacy policy like GET", async () => {
    current = buildTestApp();
    const user = await signUp(current);
    const statuses: number[] = [];
    for (const [method, path] of [
      ["GET", "/api/me/export"],
      ["HEAD", "/api/me/export"],
      ["GET", "/api/me/export/"],
      ["HEAD", "/api/me/export/"],
    ] as const) {
      const response = await send(current, path, { method, headers: bearer(user.accessToken) });
      // Read to its end: a user's exports are sent one at a time.
      await response.text();
      statuses.push(response.status);
    }
    expect(statuses).toEqual([200, 200, 200, 429]);
  });

  test("other spellings do not reach a handler", async () => {
    current = buildTestApp();
    for (const path of [
      "/api/auth/register//",
      "//api/auth/register",
      "/api//auth/register",
      "/api/auth/regist%65r",
      "/api/auth/REGISTER",
      "/API/auth/register",
      "/api/auth/register;x",
      "/api/auth/register%20",
    ]) {
      const response = await send(current, path, {
        body: { email: "never@example.test", password: "violet-Harbor-quantum-73!" },
      });
      expect({ path, status: response.status }).toEqual({
        path,
        status: response.status === 400 ? 400 : 404,
      });
    }
    expect(current.services.auth.findUserByEmail("never@example.test")).toBeNull();
  });
});

describe("through the live server's router", () => {
  /** A raw request to the live server: Bun's own router matches the path as sent. */
  const sendRaw = (port: number, method: string, path: string, peer: number) => {
    const body = method === "GET" || method === "HEAD" ? "" : "{}";
    return rawHttp(
      port,
      `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 198.51.100.${peer}\r\n` +
        (body ? `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n` : "") +
        `Connection: close\r\n\r\n${body}`,
    );
  };

  /** The app, limits raised, listening: clients named by X-Forwarded-For from loopback. */
  const liveServer = () => {
    current = buildTestApp({
      env: {
        RATE_LIMIT_PER_MINUTE: "100000",
        RATE_LIMIT_BURST: "100000",
        TRUST_PROXY: "loopback",
      },
    });
    const running = serveInProcess(current);
    return { target: current, running, port: Number(new URL(running.url).port) };
  };

  test("each spelling that reaches a handler is counted against its route's policy, as in process", async () => {
    const { running, port, target } = liveServer();
    tableOf(target);
    let peer = 0;
    try {
      for (const route of routesOf(target)) {
        const resolved = table.classify(route.method, route.path);
        for (const spelling of spellings(route.method, concrete(route.path))) {
          const response = await sendRaw(port, spelling.method, spelling.path, ++peer % 250);
          const seen = {
            route: `${spelling.method} ${spelling.path}`,
            routed: response.status !== 404 && response.status !== 405,
            policy: response.headers["ratelimit-policy"] ?? null,
          };
          const policy = policyHeaderOf(resolved);
          expect(seen).toEqual({ route: seen.route, routed: true, policy });
        }
      }
    } finally {
      await running.shutdown("test");
    }
  });

  test("a dot segment or a backslash where a route has a parameter is refused 400 BAD_PATH before auth or validation (probe 32c F3, 84c F3, 84f F4)", async () => {
    const { running, port, target } = liveServer();
    let peer = 0;
    const withParams = routesOf(target).filter((route) => route.path.includes("/:"));
    expect(withParams.length).toBeGreaterThan(3);
    try {
      for (const route of withParams) {
        for (const dots of [
          "..",
          "%2e%2e",
          ".%2E",
          "%2e.",
          ".",
          "%2e",
          "..\\",
          "..\\..\\x",
          "a\\b",
          "..#",
          ".#x",
        ]) {
          const path = route.path.replace(/:[^/]+/, dots).replace(/:[^/]+/g, "12345");
          const response = await sendRaw(port, route.method, path, ++peer % 250);
          const code = response.status === 400 ? JSON.parse(response.body).code : null;
          expect({ route: `${route.method} ${path}`, status: response.status, code }).toEqual({
            route: `${route.method} ${path}`,
            status: 400,
            code: "BAD_PATH",
          });
        }
      }
    } finally {
      await running.shutdown("test");
    }
  });
});

describe("authentication comes before validation", () => {
  test("an anonymous caller gets 401 from every route that declares auth, whatever it sends", async () => {
    current = buildTestApp({
      env: { RATE_LIMIT_PER_MINUTE: "100000", RATE_LIMIT_BURST: "100000" },
    });
    const declared = routesOf(current).filter((route) => {
      const auth = route.hooks?.detail?.[AUTH_DETAIL_KEY];
      return typeof auth === "string" && auth !== "public";
    });
    expect(declared.length).toBeGreaterThan(8);
    for (const route of declared) {
      const method = route.method;
      const path = `${route.path.replace(/:[^/]+/g, "%20%20")}?limit=abc&cursor=1.5&graceMinutes=x`;
      const response = await send(current, path, {
        method,
        body: method === "GET" ? undefined : { unexpected: ["shape"], ttlMinutes: "soon" },
      });
      const body = (await response.json()) as { code: string };
      expect({
        route: `${method} ${route.path}`,
        status: response.status,
        code: body.code,
      }).toEqual({
        route: `${method} ${route.path}`,
        status: 401,
        code: "UNAUTHENTICATED",
      });
    }
  });

  test("a signed-in user without the role gets 403 before the admin route's schema is checked", async () => {
    current = buildTestApp();
    const user = await signUp(current);
    const response = await send(current, "/api/admin/audit?limit=1.5", {
      headers: bearer(user.accessToken),
    });
    expect(response.status).toBe(403);
    const created = await send(current, "/api/admin/api-keys", {
      headers: bearer(user.accessToken),
      body: { nonsense: true },
    });
    expect(created.status).toBe(403);
  });
});
