import { afterEach, expect, test } from "bun:test";
import { API_CSP, DOCS_CSP } from "../../src/plugins/security-headers";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function expectSecurityHeaders(response: Response) {
  const h = response.headers;
  expect(h.get("content-security-policy")).toBe(API_CSP);
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
