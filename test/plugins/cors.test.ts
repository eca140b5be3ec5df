import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const ALLOWED = "https://app.example.com";

function corsApp() {
  current = buildTestApp({ env: { CORS_ALLOWED_ORIGINS: `${ALLOWED},https://admin.example.com` } });
  return current;
}

const preflight = (origin: string, method = "POST") =>
  send(current!, "/api/anything", {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": method,
      "access-control-request-headers": "authorization, content-type",
    },
  });

function corsHeadersOf(response: Response) {
  return [...response.headers.keys()].filter((k) => k.startsWith("access-control-"));
}

describe("CORS", () => {
  test("an allowed origin gets its own origin back, credentials, exposed headers and Vary", async () => {
    corsApp();
    const response = await send(current!, "/health", { headers: { origin: ALLOWED } });
    expect(response.headers.get("access-control-allow-origin")).toBe(ALLOWED);
    expect(response.headers.get("access-control-allow-credentials")).toBe("true");
    expect(response.headers.get("access-control-expose-headers")).toContain("x-request-id");
    expect(response.headers.get("vary")).toBe("Origin");
  });

  test("an allowed origin's preflight lists the explicit methods and headers", async () => {
    corsApp();
    const response = await preflight(ALLOWED);
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(ALLOWED);
    expect(response.headers.get("access-control-allow-methods")).toBe(
      "GET, POST, PUT, PATCH, DELETE",
    );
    expect(response.headers.get("access-control-allow-headers")).toContain("authorization");
    expect(response.headers.get("access-control-max-age")).toBe("600");
  });

  test.each([
    ["an unlisted origin", "https://evil.test"],
    ["a look-alike suffix", "https://app.example.com.evil.test"],
    ["a look-alike prefix", "https://evilapp.example.com"],
    ["another scheme", "http://app.example.com"],
    ["another port", "https://app.example.com:8443"],
    ["the null origin", "null"],
    ["a case trick", "https://APP.example.com"],
  ])("%s gets no CORS headers, on requests and preflights", async (_label, origin) => {
    corsApp();
    const response = await send(current!, "/health", { headers: { origin } });
    expect(corsHeadersOf(response)).toEqual([]);
    expect(response.headers.get("vary")).toBe("Origin");
    const pre = await preflight(origin);
    expect(pre.status).toBe(204);
    expect(corsHeadersOf(pre)).toEqual([]);
  });

  test("a preflight for a method outside the list permits nothing: no CORS header at all", async () => {
    corsApp();
    const response = await preflight(ALLOWED, "TRACE");
    expect(response.status).toBe(204);
    // Allow-Origin and -Credentials went out too until this release (probe 46a, an observation).
    expect(corsHeadersOf(response)).toEqual([]);
  });

  test("an allowed origin's preflights are not counted, so a page's many never spend or block its address (probe 46a F4)", async () => {
    corsApp();
    const office = "192.0.2.44";
    // Past the default burst of 20, one URL each, as a page of 30 conversations sends them.
    for (let i = 0; i < 30; i++) {
      const response = await send(current!, `/api/chat/conversations/c${i}`, {
        method: "OPTIONS",
        peer: office,
        headers: {
          origin: ALLOWED,
          "access-control-request-method": "GET",
          "access-control-request-headers": "authorization",
          "sec-fetch-site": "cross-site",
          "sec-fetch-mode": "cors",
        },
      });
      expect(response.status).toBe(204);
      expect(response.headers.get("access-control-allow-origin")).toBe(ALLOWED);
      expect(response.headers.get("ratelimit")).toBeNull();
    }
    await Bun.sleep(20);
    expect(
      current!.db.$client
        .query("SELECT count(*) AS n FROM rate_limit_counters WHERE key = ?")
        .get(`ip:${office}`),
    ).toEqual({ n: 0 });
    const after = await send(current!, "/openapi.json", { peer: office });
    expect(after.status).toBe(200);
    expect(after.headers.get("x-ratelimit-remaining")).toBe("19");
    // Another origin's, or one for another method, is counted as before.
    const other = await preflight("https://evil.test");
    expect(other.headers.get("ratelimit")).not.toBeNull();
  });

  test("a preflight naming a method in another case is no allowed method's: methods are case-sensitive (probe 75c N3)", async () => {
    corsApp();
    for (const method of ["post", "Post", "delete"]) {
      const response = await preflight(ALLOWED, method);
      expect([method, response.status, corsHeadersOf(response)]).toEqual([method, 204, []]);
      expect(response.headers.get("ratelimit")).not.toBeNull();
    }
    const upper = await preflight(ALLOWED, "POST");
    expect(upper.headers.get("access-control-allow-methods")).not.toBeNull();
    expect(upper.headers.get("ratelimit")).toBeNull();
  });

  test("an allowed origin's preflight naming a Host the service does not answer for is counted and refused as any request", async () => {
    current = buildTestApp({
      env: { CORS_ALLOWED_ORIGINS: ALLOWED, ALLOWED_HOSTS: "api.example.com" },
    });
    const ask = (host: string) =>
      send(current!, "/api/anything", {
        method: "OPTIONS",
        peer: "192.0.2.45",
        headers: { host, origin: ALLOWED, "access-control-request-method": "POST" },
      });
    const listed = await ask("api.example.com");
    expect(listed.status).toBe(204);
    expect(listed.headers.get("access-control-allow-methods")).not.toBeNull();
    expect(listed.headers.get("ratelimit")).toBeNull();
    for (const host of ["rebound.evil.test", "api.example.com.evil.test", "bad host"]) {
      const other = await ask(host);
      expect([host, other.status]).toEqual([host, 400]);
      expect(((await other.json()) as { code: string }).code).toBe("BAD_HEADER");
      expect(other.headers.get("access-control-allow-methods")).toBeNull();
      expect(other.headers.get("ratelimit")).not.toBeNull();
    }
  });

  test("refusals by earlier stages still carry CORS headers for an allowed origin", async () => {
    corsApp();
    const refused = await send(current!, "/api/x%00y", { headers: { origin: ALLOWED } });
    expect(refused.status).toBe(400);
    expect(refused.headers.get("access-control-allow-origin")).toBe(ALLOWED);
  });

  test("the production profile has no allowed origins by default", async () => {
    current = buildTestApp({
      env: PRODUCTION_ENV,
    });
    const response = await send(current, "/health", {
      headers: { origin: "http://localhost:3000" },
    });
    expect(corsHeadersOf(response)).toEqual([]);
  });
});

test("preflights are logged and counted like any other request", async () => {
  corsApp();
  await preflight(ALLOWED);
  await preflight("https://evil.test");
  const entries = current!.logs.entries.filter((e) => e.method === "OPTIONS");
  expect(entries.map((e) => e.status)).toEqual([204, 204]);
  const metrics = await (await send(current!, "/metrics")).text();
  expect(metrics).toContain(
    'http_requests_total{method="OPTIONS",route="<unmatched>",status="204"} 2',
  );
});
