import { afterEach, describe, expect, test } from "bun:test";
import { issueCsrfToken, verifyCsrfToken } from "../../src/plugins/csrf/token";
import { buildTestApp, PRODUCTION_ENV, send, TEST_CSRF_SECRET, type TestApp } from "../support/app";
import { ManualClock } from "../support/clock";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const SESSION = "session-token-value";

function csrfApp(clock = new ManualClock(), env: Record<string, string> = {}) {
  current = buildTestApp({
    clock,
    env,
    routeClasses: [
      { routes: ["POST /api/test/change"] },
      { routes: ["POST /webhooks/test"], bodyLimit: "webhooks", csrfExempt: true },
    ],
  });
  const app = current.app
    .post("/api/test/change", () => ({ changed: true }))
    .post("/webhooks/test", () => ({ received: true }));
  return { ...current, app, clock };
}

type Handles = { app: { handle(request: Request): Promise<Response> } };

async function issue(target: Handles, cookie = `palisade_session=${SESSION}`) {
  const response = await send(target, "/api/auth/csrf", { headers: { cookie } });
  const { token } = (await response.json()) as { token: string };
  return { response, token };
}

const change = (target: Handles, headers: Record<string, string>, method = "POST") =>
  send(target, "/api/test/change", { method, headers });

describe("issuing", () => {
  test("GET /api/auth/csrf returns the token and sets it as a readable, strict cookie", async () => {
    const target = csrfApp();
    const { response, token } = await issue(target);
    expect(response.status).toBe(200);
    expect(token).toMatch(/^\d+\.[\w-]+\.[\w-]+$/);
    const cookie = response.headers.get("set-cookie")!;
    expect(cookie).toStartWith(`palisade_csrf=${token};`);
    expect(cookie).toContain("SameSite=Strict");
    expect(cookie).toContain("Path=/");
    expect(cookie).toContain("Max-Age=3600");
    expect(cookie).not.toContain("HttpOnly");
  });

  test("in production the cookie is __Host- prefixed and Secure", async () => {
    const target = csrfApp(new ManualClock(), PRODUCTION_ENV);
    const { response } = await issue(target, `__Host-palisade_session=${SESSION}`);
    const cookie = response.headers.get("set-cookie")!;
    expect(cookie).toStartWith("__Host-palisade_csrf=");
    expect(cookie).toContain("Secure");
  });
});

describe("checking", () => {
  test("a cookie-authenticated change with the matching token passes", async () => {
    const target = csrfApp();
    const { token } = await issue(target);
    const response = await change(target, {
      cookie: `palisade_session=${SESSION}; palisade_csrf=${token}`,
      "x-csrf-token": token,
      "sec-fetch-site": "same-origin",
    });
    expect(response.status).toBe(200);
  });

  test.each([
    [
      "no header",
      (token: string) => ({ cookie: `palisade_session=${SESSION}; palisade_csrf=${token}` }),
    ],
    [
      "no cookie",
      (token: string) => ({ cookie: `palisade_session=${SESSION}`, "x-csrf-token": token }),
    ],
    [
      "header and cookie differ",
      (token: string) => ({
        cookie: `palisade_session=${SESSION}; palisade_csrf=${token}`,
        "x-csrf-token": `${token}x`,
      }),
    ],
    [
      "a token for another session",
      (token: string) => ({
        cookie: `palisade_session=someone-else; palisade_csrf=${token}`,
        "x-csrf-token": token,
      }),
    ],
    [
      "a cross-site request",
      (token: string) => ({
        cookie: `palisade_session=${SESSION}; palisade_csrf=${token}`,
        "x-csrf-token": token,
        "sec-fetch-site": "cross-site",
        // From an allowed origin: another one is refused before it is counted (cross-site stage).
        origin: "http://localhost:3000",
      }),
    ],
    [
      "a cross-site request spelt in another case",
      (token: string) => ({
        cookie: `palisade_session=${SESSION}; palisade_csrf=${token}`,
        "x-csrf-token": token,
        "sec-fetch-site": "Cross-Site",
        // From an allowed origin: another one is refused before it is counted (cross-site stage).
        origin: "http://localhost:3000",
      }),
    ],
    [
      "a cross-site request listed with another value (two headers)",
      (token: string) => ({
        cookie: `palisade_session=${SESSION}; palisade_csrf=${token}`,
        "x-csrf-token": token,
        "sec-fetch-site": "same-origin, cross-site",
        // From an allowed origin: another one is refused before it is counted (cross-site stage).
        origin: "http://localhost:3000",
      }),
    ],
    [
      "only the refresh cookie",
      (token: string) => ({ cookie: `palisade_refresh=r; palisade_csrf=${token}` }),
    ],
  ])("refuses %s with 403 CSRF_FAILED", async (_label, headersFor) => {
    const target = csrfApp();
    const { token } = await issue(target);
    const response = await change(target, headersFor(token));
    expect(response.status).toBe(403);
    expect(((await response.json()) as { code: string }).code).toBe("CSRF_FAILED");
  });

  test("every state-changing method is checked; safe methods are not", async () => {
    const target = csrfApp();
    const cookie = `palisade_session=${SESSION}`;
    for (const method of ["PUT", "PATCH", "DELETE"]) {
      expect((await change(target, { cookie }, method)).status).toBe(403);
    }
    expect((await send(target, "/health", { headers: { cookie } })).status).toBe(200);
  });

  test("an expired token is refused, even with a valid signature", async () => {
    const target = csrfApp();
    const { token } = await issue(target);
    target.clock.advance(60 * 60 * 1000 + 1);
    const response = await change(target, {
      cookie: `palisade_session=${SESSION}; palisade_csrf=${token}`,
      "x-csrf-token": token,
    });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { detail: string }).detail).toContain("expired");
  });

  test("a token re-signed with another key, or with a changed timestamp, is refused", async () => {
    const target = csrfApp();
    const now = target.clock.now();
    const forged = issueCsrfToken("attacker-key-0123456789-abcdefghijkl", SESSION, now);
    const [, nonce, signature] = (await issue(target)).token.split(".");
    const restamped = `${now + 1000}.${nonce}.${signature}`;
    for (const token of [forged, restamped]) {
      const response = await change(target, {
        cookie: `palisade_session=${SESSION}; palisade_csrf=${token}`,
        "x-csrf-token": token,
      });
      expect(response.status).toBe(403);
    }
    expect(verifyCsrfToken(TEST_CSRF_SECRET, forged, SESSION, now)).toBe("BAD_SIGNATURE");
    expect(verifyCsrfToken(TEST_CSRF_SECRET, "not-a-token", SESSION, now)).toBe("MALFORMED");
  });

  test("header-authenticated requests, cookie-less requests and csrfExempt classes are exempt", async () => {
    const target = csrfApp();
    const cookie = `palisade_session=${SESSION}`;
    expect((await change(target, { cookie, authorization: "Bearer abc" })).status).toBe(200);
    expect((await change(target, { cookie, "x-api-key": "pal_test_abc" })).status).toBe(200);
    expect((await change(target, {})).status).toBe(200);
    const webhook = await send(target, "/webhooks/test", { method: "POST", headers: { cookie } });
    expect(webhook.status).toBe(200);
  });

  test("refusals are counted and audited", async () => {
    const target = csrfApp();
    await change(target, { cookie: `palisade_session=${SESSION}` });
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain("csrf_failures_total 1");
    target.services.audit.flush();
    const row = target.db.$client
      .query("SELECT route, outcome, detail FROM audit_events WHERE type = 'csrf.failed'")
      .get() as { route: string; detail: string };
    expect(row.route).toBe("POST /api/test/change");
    expect(JSON.parse(row.detail)).toEqual({ reason: "missing token" });
  });
});

describe("rotating CSRF_SECRET_KEY", () => {
  test("tokens signed with CSRF_PREVIOUS_SECRET_KEY still pass; only the current key signs", async () => {
    const oldKey = "old-csrf-secret-0123456789abcdefghijklmnopqrstu";
    const newKey = "new-csrf-secret-0123456789abcdefghijklmnopqrstu";
    const before = csrfApp(new ManualClock(), { CSRF_SECRET_KEY: oldKey });
    const { token: oldToken } = await issue(before);
    before.close();

    const during = csrfApp(new ManualClock(), {
      CSRF_SECRET_KEY: newKey,
      CSRF_PREVIOUS_SECRET_KEY: oldKey,
    });
    const withOld = {
      cookie: `palisade_session=${SESSION}; palisade_csrf=${oldToken}`,
      "x-csrf-token": oldToken,
    };
    expect((await change(during, withOld)).status).toBe(200);
    const { token: newToken } = await issue(during);
    expect(verifyCsrfToken(newKey, newToken, SESSION, during.clock.now())).toBe("VALID");
    expect(verifyCsrfToken(oldKey, newToken, SESSION, during.clock.now())).toBe("BAD_SIGNATURE");
    during.close();

    const after = csrfApp(new ManualClock(), { CSRF_SECRET_KEY: newKey });
    expect((await change(after, withOld)).status).toBe(403);
  });
});
