import { afterEach, expect, test } from "bun:test";
import { API_CSP, DOCS_CSP, DOCS_SCRIPT } from "../../src/plugins/security-headers";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "../support/app";
import { bearer, STRONG_PASSWORD, signUp } from "../support/auth";
import { parseSse, SSE } from "../support/chat";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function expectSecurityHeaders(response: Response, csp = API_CSP) {
  const h = response.headers;
  expect(h.get("content-security-policy")).toBe(csp);
  expect(h.get("x-content-type-options")).toBe("nosniff");
  expect(h.get("x-frame-options")).toBe("DENY");
  expect(h.get("referrer-policy")).toBe("no-referrer");
  expect(h.get("permissions-policy")).toBe("camera=(), microphone=(), geolocation=(), payment=()");
  expect(h.get("cross-origin-opener-policy")).toBe("same-origin");
  expect(h.get("cross-origin-resource-policy")).toBe("same-origin");
  expect(h.get("cache-control")).toBe("no-store");
  expect(h.get("x-powered-by")).toBeNull();
  expect(h.get("server")).toBeNull();
}

test("every response carries the security headers: success, 404, 405, 422, 500, refusals", async () => {
  current = buildTestApp({ env: { RATE_LIMIT_PER_MINUTE: "6" } });
  const app = current.app.get("/test/boom", () => {
    throw new Error("boom");
  });
  const target = { app };
  const responses = [
    await send(target, "/health"),
    await send(target, "/no/such"),
    await send(target, "/health", { method: "DELETE" }),
    await send(target, "/test/boom"),
    await send(target, "/api/x%00y"),
  ];
  expect(responses.map((r) => r.status)).toEqual([200, 404, 405, 500, 400]);
  for (const response of responses) expectSecurityHeaders(response);
  let limited: Response | null = null;
  for (let i = 0; i < 8 && limited === null; i++) {
    const response = await send(target, "/openapi.json");
    if (response.status === 429) limited = response;
  }
  expect(limited).not.toBeNull();
  expectSecurityHeaders(limited!);
});

test("HSTS only where the profile is served over TLS", async () => {
  current = buildTestApp();
  expect((await send(current, "/health")).headers.get("strict-transport-security")).toBeNull();
  current.close();
  current = buildTestApp({ env: PRODUCTION_ENV });
  expect((await send(current, "/health")).headers.get("strict-transport-security")).toBe(
    "max-age=31536000; includeSubDomains",
  );
});

test("the HTML docs page gets its own policy, which still forbids framing and inline script", async () => {
  current = buildTestApp();
  const response = await send(current, "/docs");
  const csp = response.headers.get("content-security-policy")!;
  expect(csp).toBe(DOCS_CSP);
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).not.toContain("script-src 'unsafe-inline'");
});

test("every registered route, in every method it serves (and HEAD), answers with the security headers", async () => {
  current = buildTestApp();
  const seen: string[] = [];
  for (const route of current.app.routes) {
    if (route.method === "ALL" || route.method === "WS") continue;
    const path = route.path.replace(/:[A-Za-z]+/g, "1").replace(/\*/g, "x");
    const methods = route.method === "GET" ? ["GET", "HEAD"] : [route.method];
    for (const method of methods) {
      const hasBody = method !== "GET" && method !== "HEAD" && method !== "DELETE";
      const response = await send(current, path, { method, body: hasBody ? {} : undefined });
      const where = `${method} ${route.path} → ${response.status}`;
      const h = response.headers;
      expect([where, h.get("x-content-type-options")]).toEqual([where, "nosniff"]);
      expect([where, h.get("content-security-policy")]).toEqual([
        where,
        route.path === "/docs" ? DOCS_CSP : API_CSP,
      ]);
      expect([where, h.get("cache-control")]).toEqual([where, "no-store"]);
      expect([where, h.get("x-request-id")]).not.toEqual([where, null]);
      seen.push(where);
    }
  }
  // Answers of every kind were among them: handlers' JSON and text, 401, 404-by-id, 422.
  expect(seen.some((w) => w.endsWith("→ 200"))).toBe(true);
  expect(seen.some((w) => w.endsWith("→ 401"))).toBe(true);
  expect(seen.some((w) => w.endsWith("→ 422") || w.endsWith("→ 400"))).toBe(true);
});

test("what a handler sets goes out with the fixed headers: its status, its content type, each cookie", async () => {
  current = buildTestApp({ env: { METRICS_TOKEN: undefined } });
  const registered = await send(current, "/api/auth/register", {
    body: { email: "headers@example.test", password: STRONG_PASSWORD },
    peer: "10.7.0.1",
  });
  expect(registered.status).toBe(201);
  expectSecurityHeaders(registered);
  expect(registered.headers.get("x-ratelimit-limit")).not.toBeNull();
  expect(registered.headers.get("content-type")).toBe("application/json;charset=utf-8");

  const login = await send(current, "/api/auth/login?mode=cookie", {
    body: { email: "headers@example.test", password: STRONG_PASSWORD },
    peer: "10.7.0.1",
  });
  expect(login.status).toBe(200);
  expectSecurityHeaders(login);
  expect(login.headers.getSetCookie()).toHaveLength(3);

  const csrf = await send(current, "/api/auth/csrf");
  expectSecurityHeaders(csrf);
  expect(csrf.headers.getSetCookie()).toHaveLength(1);

  const metrics = await send(current, "/metrics");
  expect(metrics.status).toBe(200);
  expectSecurityHeaders(metrics);
  expect(metrics.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
  expect(await metrics.text()).toContain("http_requests_total");
});

test("a streamed chat answer carries the security headers and its own stream headers", async () => {
  current = buildTestApp();
  const session = await signUp(current);
  const response = await send(current, "/api/chat", {
    body: { message: "How do I reset my password?" },
    headers: { ...bearer(session.accessToken), ...SSE },
  });
  expect(response.status).toBe(200);
  expectSecurityHeaders(response);
  expect(response.headers.get("content-type")).toStartWith("text/event-stream");
  expect(parseSse(await response.text()).at(-1)?.event).toBe("done");
});

test("a handler's own Response keeps its headers and gains the fixed ones it lacks", async () => {
  current = buildTestApp({ routeClasses: [{ routes: ["GET /test/own", "GET /test/text"] }] });
  const app = current.app
    .get(
      "/test/own",
      () =>
        new Response("own", {
          status: 202,
          headers: { "cache-control": "max-age=5", "x-own": "yes" },
        }),
      { public: true },
    )
    .get("/test/text", () => "plain text", { public: true });
  const own = await send({ app }, "/test/own");
  expect(own.status).toBe(202);
  expect(own.headers.get("cache-control")).toBe("max-age=5");
  expect(own.headers.get("x-own")).toBe("yes");
  expect(own.headers.get("x-frame-options")).toBe("DENY");
  expect(await own.text()).toBe("own");

  const text = await send({ app }, "/test/text");
  expectSecurityHeaders(text);
  expect(await text.text()).toBe("plain text");
});

test("the HTML policy goes with the docs route in its every spelling, and never on an error at its path", async () => {
  current = buildTestApp();
  for (const path of ["/docs", "/docs/"]) {
    const page = await send(current, path);
    expect([path, page.status, page.headers.get("content-type")?.split(";")[0]]).toEqual([
      path,
      200,
      "text/html",
    ]);
    expect(page.headers.get("content-security-policy")).toBe(DOCS_CSP);
    // Its one script is Scalar's bundle at a named version, the only one the policy lets run
    // (probe 71b F1: `@latest`, and any file of the CDN).
    const scripts = [...(await page.text()).matchAll(/<script[^>]*\ssrc="([^"]+)"/g)].map(
      (match) => match[1],
    );
    expect(scripts).toEqual([DOCS_SCRIPT]);
    expect(DOCS_SCRIPT).toMatch(/@\d+\.\d+\.\d+\//);
    expect(DOCS_CSP).toContain(`script-src ${DOCS_SCRIPT};`);
  }
  for (const method of ["POST", "DELETE"]) {
    const refused = await send(current, "/docs", { method });
    expect(refused.status).toBe(405);
    expectSecurityHeaders(refused);
  }
});
