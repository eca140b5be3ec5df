/**
 * Fetch Metadata resource isolation (probe 46a F3): a request a browser made for another site's
 * page is refused before it is counted, so no page can spend its visitors' budgets or get their
 * addresses blocked; what is not a browser's, or is the allowed front-end's, or a link followed,
 * passes as before.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../support/app";
import { createKey, STRONG_PASSWORD, signUp } from "../support/auth";
import { cookieHeader, cookiesOf } from "../support/cookies";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const ALLOWED = "https://app.example.com";
const VISITOR = "192.0.2.61";

function crossSiteApp() {
  current = buildTestApp({ env: { CORS_ALLOWED_ORIGINS: ALLOWED } });
  return current;
}

/** What Chrome and Firefox send for an `<img>` on another site's page. */
const IMAGE = {
  "sec-fetch-site": "cross-site",
  "sec-fetch-mode": "no-cors",
  "sec-fetch-dest": "image",
};

/** What a browser sends for a top-level page another site's link or script opened. */
const NAVIGATION = {
  "sec-fetch-site": "cross-site",
  "sec-fetch-mode": "navigate",
  "sec-fetch-dest": "document",
};

const countedFor = (target: TestApp, peer: string) =>
  target.db.$client
    .query("SELECT count(*) AS n FROM rate_limit_counters WHERE key = ?")
    .get(`ip:${peer}`) as { n: number };

describe("a browser request from another site's page", () => {
  test("is 403 CROSS_SITE_REFUSED before it is counted: thirty image tags neither spend nor block the visitor's address", async () => {
    const target = crossSiteApp();
    for (let i = 0; i < 30; i++) {
      const response = await send(target, `/api/auth/csrf?n=${i}`, {
        peer: VISITOR,
        headers: IMAGE,
      });
      expect(response.status).toBe(403);
      expect(response.headers.get("content-type")).toStartWith("application/problem+json");
      const problem = (await response.json()) as { code: string; requestId: string };
      expect(problem.code).toBe("CROSS_SITE_REFUSED");
      expect(problem.requestId).toBe(response.headers.get("x-request-id")!);
    }
    await Bun.sleep(20);
    expect(countedFor(target, VISITOR)).toEqual({ n: 0 });
    expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 0 });
    // The visitor's own requests are untouched.
    const own = await send(target, "/openapi.json", { peer: VISITOR });
    expect(own.status).toBe(200);
    expect(own.headers.get("x-ratelimit-remaining")).toBe("19");
  });

  test.each([
    ["no-cors fetch", { "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors" }, "GET"],
    ["the value in another case", { "sec-fetch-site": "Cross-Site" }, "GET"],
    ["two headers", { "sec-fetch-site": "same-origin, cross-site" }, "GET"],
    ["a form posted", { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" }, "POST"],
    [
      "a frame",
      { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "iframe" },
      "GET",
    ],
    ["a link to an API route, not a page (probe 49a F2)", NAVIGATION, "GET"],
    [
      "a CORS fetch from an origin not allowed",
      { "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors", origin: "https://evil.test" },
      "GET",
    ],
    [
      "a preflight from an origin not allowed",
      {
        "sec-fetch-site": "cross-site",
        "sec-fetch-mode": "cors",
        origin: "https://evil.test",
        "access-control-request-method": "POST",
      },
      "OPTIONS",
    ],
  ])("is refused when it is %s", async (_label, headers, method) => {
    const target = crossSiteApp();
    const response = await send(target, "/api/auth/register", {
      method,
      headers,
      peer: VISITOR,
      ...(method === "POST" ? { body: { email: "a@example.test" } } : {}),
    });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { code: string }).code).toBe("CROSS_SITE_REFUSED");
    await Bun.sleep(20);
    expect(countedFor(target, VISITOR)).toEqual({ n: 0 });
  });
});

describe("a page of a sibling subdomain (same-site, probe 75c F4)", () => {
  test.each([
    ["an image", { "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image" }],
    ["a script", { "sec-fetch-mode": "no-cors", "sec-fetch-dest": "script" }],
    ["a frame", { "sec-fetch-mode": "navigate", "sec-fetch-dest": "iframe" }],
    ["a no-cors fetch", { "sec-fetch-mode": "no-cors", "sec-fetch-dest": "empty" }],
    ["a style sheet, in another case", { "sec-fetch-mode": "no-cors", "sec-fetch-dest": "style" }],
  ])(
    "loading %s is refused before it is counted: thirty neither spend nor block the visitor's address",
    async (_label, kind) => {
      const target = crossSiteApp();
      const site = _label.includes("another case") ? "Same-Site" : "same-site";
      for (let i = 0; i < 30; i++) {
        const response = await send(target, `/api/auth/csrf?n=${i}`, {
          peer: VISITOR,
          headers: { ...kind, "sec-fetch-site": site },
        });
        expect(response.status).toBe(403);
        expect(((await response.json()) as { code: string }).code).toBe("CROSS_SITE_REFUSED");
      }
      await Bun.sleep(20);
      expect(countedFor(target, VISITOR)).toEqual({ n: 0 });
      expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({
        n: 0,
      });
    },
  );

  test("a fetch(), a form or a window from a sibling origin not allowed is refused before it is counted, as another site's (probe 75e F4)", async () => {
    const target = crossSiteApp();
    const forum = "https://forum.example.com";
    const kinds: [string, string, Record<string, string>, string | undefined][] = [
      // fetch()'s default mode: a simple GET, sent without a preflight, whatever its origin.
      [
        "GET",
        "/openapi.json",
        { "sec-fetch-mode": "cors", "sec-fetch-dest": "empty", origin: forum },
        undefined,
      ],
      // A form posted to a route, as a navigation.
      [
        "POST",
        "/api/auth/login",
        {
          "sec-fetch-mode": "navigate",
          "sec-fetch-dest": "document",
          origin: forum,
          "content-type": "text/plain",
        },
        '{"email":"a@example.com","password":"x"}',
      ],
      // A window sent to a route no link leads to.
      [
        "GET",
        "/api/auth/csrf",
        { "sec-fetch-mode": "navigate", "sec-fetch-dest": "document" },
        undefined,
      ],
    ];
    for (const [method, path, kind, body] of kinds) {
      for (let i = 0; i < 30; i++) {
        const response = await send(target, `${path}?n=${i}`, {
          method,
          peer: VISITOR,
          headers: { ...kind, "sec-fetch-site": "same-site" },
          ...(body === undefined ? {} : { body }),
        });
        expect([method, path, response.status]).toEqual([method, path, 403]);
        expect(((await response.json()) as { code: string }).code).toBe("CROSS_SITE_REFUSED");
      }
    }
    await Bun.sleep(20);
    expect(countedFor(target, VISITOR)).toEqual({ n: 0 });
    expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({
      n: 0,
    });
  });

  test("its navigations to the documentation are counted but never block the visitor, nor lock out the user whose cookie the browser adds (probe 75e F4)", async () => {
    const target = crossSiteApp();
    const user = await signUp(target, { peer: "10.1.1.1" });
    const login = await send(target, "/api/auth/login?mode=cookie", {
      body: { email: user.email, password: STRONG_PASSWORD },
      peer: "10.1.1.2",
    });
    const cookie = cookieHeader(cookiesOf(login));
    const statuses = new Set<number>();
    for (let i = 0; i < 30; i++) {
      const response = await send(target, `/openapi.json?n=${i}`, {
        peer: VISITOR,
        headers: { ...NAVIGATION, "sec-fetch-site": "same-site", cookie },
      });
      statuses.add(response.status);
    }
    expect([...statuses].sort()).toEqual([200, 429]);
    await Bun.sleep(20);
    expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({
      n: 0,
    });
    // A bearer token is the sender's own: its refusals lock its principal out (probe 58d F1).
    const headers = {
      ...NAVIGATION,
      "sec-fetch-site": "same-site",
      authorization: `Bearer ${user.accessToken}`,
    };
    for (let i = 0; i < 30; i++) {
      await send(target, `/openapi.json?m=${i}`, { peer: "192.0.2.63", headers });
    }
    await Bun.sleep(20);
    expect(target.db.$client.query("SELECT address FROM ip_blocks").all()).toEqual([
      { address: `user:${user.userId}` },
    ]);
  });

  test("a list naming another site too is another site's: the cookie beside it is a credential, and its refusals block (probe 76b F3)", async () => {
    const target = crossSiteApp();
    const headers = {
      ...NAVIGATION,
      "sec-fetch-site": "cross-site, same-site",
      cookie: "palisade_session=not-a-session",
    };
    const statuses = new Set<number>();
    for (let i = 0; i < 45; i++) {
      statuses.add((await send(target, `/openapi.json?n=${i}`, { peer: VISITOR, headers })).status);
    }
    expect(statuses.has(429)).toBe(true);
    await Bun.sleep(20);
    expect(target.db.$client.query("SELECT address FROM ip_blocks").all()).toEqual([
      { address: VISITOR },
    ]);
    // However long the list, it is read once: a list of 15,000 commas before the item.
    const long = await send(target, "/api/auth/csrf", {
      peer: "192.0.2.64",
      headers: { "sec-fetch-site": `${",".repeat(15_000)} cross-site` },
    });
    expect(((await long.json()) as { code: string }).code).toBe("CROSS_SITE_REFUSED");
  });

  test("its CORS calls and links followed are served as before, and a same-origin image is not refused here", async () => {
    const target = crossSiteApp();
    const cors = await send(target, "/api/auth/csrf", {
      peer: VISITOR,
      headers: {
        "sec-fetch-site": "same-site",
        "sec-fetch-mode": "cors",
        "sec-fetch-dest": "empty",
        origin: ALLOWED,
      },
    });
    expect(cors.status).toBe(200);
    const link = await send(target, "/openapi.json", {
      peer: VISITOR,
      headers: { ...NAVIGATION, "sec-fetch-site": "same-site" },
    });
    expect(link.status).toBe(200);
    // A browser's own favicon request on the documentation page: a 404, not a refusal.
    const favicon = await send(target, "/favicon.ico", {
      peer: VISITOR,
      headers: { ...IMAGE, "sec-fetch-site": "same-origin" },
    });
    expect(favicon.status).toBe(404);
  });
});

test("a page opening the API's URLs in a window of its own, one after another, neither spends nor blocks the visitor's address (probe 49a F2)", async () => {
  const target = crossSiteApp();
  for (let i = 0; i < 30; i++) {
    const path = i % 2 === 0 ? `/api/auth/csrf?n=${i}` : `/nothing-here-${i}`;
    const response = await send(target, path, { peer: VISITOR, headers: NAVIGATION });
    expect([path, response.status]).toEqual([path, 403]);
  }
  await Bun.sleep(20);
  expect(countedFor(target, VISITOR)).toEqual({ n: 0 });
  expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 0 });
  // The documentation is what a link from another site may open.
  const docs = await send(target, "/openapi.json", { peer: VISITOR, headers: NAVIGATION });
  expect(docs.status).toBe(200);
});

test("navigations from another site to the documentation are counted, and refused past the limit, but never block the visitor's address (probe 58b F1)", async () => {
  const target = crossSiteApp();
  const statuses: number[] = [];
  for (let i = 0; i < 30; i++) {
    const path = i % 2 === 0 ? `/openapi.json?n=${i}` : `/docs?n=${i}`;
    const method = i % 3 === 0 ? "HEAD" : "GET";
    statuses.push(
      (await send(target, path, { method, peer: VISITOR, headers: NAVIGATION })).status,
    );
  }
  expect(statuses.filter((status) => status === 200)).toHaveLength(20);
  expect(statuses.filter((status) => status === 429)).toHaveLength(10);
  await Bun.sleep(20);
  expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 0 });
  // The visitor's own requests are refused for the burst's seconds, never blocked.
  const own = await send(target, "/api/auth/csrf", { peer: VISITOR });
  expect(own.status).toBe(429);
  expect(((await own.json()) as { code: string }).code).toBe("RATE_LIMITED");
  // The same requests without the browser's marks are a client's own: their refusals block.
  for (let i = 0; i < 10; i++) await send(target, `/openapi.json?m=${i}`, { peer: "192.0.2.62" });
  await Bun.sleep(20);
  expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 0 });
  for (let i = 0; i < 20; i++) await send(target, `/openapi.json?m=${i}`, { peer: "192.0.2.62" });
  await Bun.sleep(20);
  expect(target.db.$client.query("SELECT address FROM ip_blocks").all()).toEqual([
    { address: "192.0.2.62" },
  ]);
});

test("a client sending a navigation's headers with an allowed Origin is blocked on every other route, as without them (probe 58c F1)", async () => {
  const target = crossSiteApp();
  const forged = { ...NAVIGATION, origin: ALLOWED };
  for (const [method, path] of [
    ["GET", "/api/auth/csrf"],
    ["HEAD", "/api/auth/csrf"],
    ["GET", "/nothing-here"],
  ] as const) {
    const peer = `192.0.2.${method === "HEAD" ? 71 : path.length}`;
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) {
      statuses.push(
        (await send(target, `${path}?n=${i}`, { method, peer, headers: forged })).status,
      );
    }
    // 20 admitted (or 404), 5 refused, the fifth refusal blocks: 403 from then on.
    expect([method, path, statuses.slice(25)]).toEqual([method, path, [403, 403, 403, 403, 403]]);
    await Bun.sleep(20);
    expect(
      target.db.$client.query("SELECT count(*) AS n FROM ip_blocks WHERE address = ?").get(peer),
    ).toEqual({ n: 1 });
  }
});

test("a navigation's headers on the documentation with a credential spare nothing: the principal is locked out as without them (probe 58d F1)", async () => {
  const target = crossSiteApp();
  const user = await signUp(target);
  const headers = { ...NAVIGATION, authorization: `Bearer ${user.accessToken}` };
  for (let i = 0; i < 30; i++)
    await send(target, `/openapi.json?n=${i}`, { peer: VISITOR, headers });
  await Bun.sleep(20);
  expect(target.db.$client.query("SELECT address FROM ip_blocks").all()).toEqual([
    { address: `user:${user.userId}` },
  ]);
});

describe("what is let through as before", () => {
  test.each([
    ["a client that is not a browser (no Sec-Fetch-Site)", {}],
    ["the service's own page", { "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors" }],
    // An allowed sibling origin's CORS call; what its pages load into themselves is refused
    // (above), and another sibling's calls (below).
    [
      "an allowed sibling origin",
      { "sec-fetch-site": "same-site", "sec-fetch-mode": "cors", origin: ALLOWED },
    ],
    ["an address typed", { "sec-fetch-site": "none", "sec-fetch-mode": "navigate" }],
    [
      "the allowed front-end's call",
      { "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors", origin: ALLOWED },
    ],
    ["a link followed from another site", NAVIGATION],
  ])("%s", async (_label, headers) => {
    const target = crossSiteApp();
    const response = await send(target, "/openapi.json", { headers, peer: VISITOR });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-ratelimit-remaining")).toBe("19");
  });
});

test("every spelling and method that reaches a route meets the stage alike; a credential does not let another site's request by", async () => {
  const target = crossSiteApp();
  // The documentation is navigable by GET and HEAD, in the spellings that reach it.
  for (const [method, path] of [
    ["GET", "/openapi.json/"],
    ["HEAD", "/openapi.json"],
  ] as const) {
    const response = await send(target, path, { method, headers: NAVIGATION, peer: VISITOR });
    expect([method, path, response.status]).toEqual([method, path, 200]);
  }
  // An API route is not, in any spelling or method.
  for (const [method, path] of [
    ["GET", "/api/auth/csrf/"],
    ["HEAD", "/api/auth/csrf"],
    ["GET", "/api/auth/./csrf"],
  ] as const) {
    const response = await send(target, path, { method, headers: NAVIGATION, peer: VISITOR });
    expect([method, path, response.status]).toEqual([method, path, 403]);
  }
  // A bearer token or an API key on a request another site's page made: refused all the same,
  // before the credential is looked at or counted against its principal.
  const session = await signUp(target);
  for (const credential of <Record<string, string>[]>[
    { authorization: `Bearer ${session.accessToken}` },
    { "x-api-key": createKey(target, ["chat"], session.userId).key },
  ]) {
    const response = await send(target, "/api/auth/me", {
      headers: { ...credential, "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors" },
      peer: VISITOR,
    });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { code: string }).code).toBe("CROSS_SITE_REFUSED");
  }
  await Bun.sleep(20);
  expect(
    target.db.$client
      .query(
        "SELECT count(*) AS n FROM rate_limit_counters WHERE key LIKE 'user:%' OR key LIKE 'key:%'",
      )
      .get(),
  ).toEqual({ n: 0 });
});
