/**
 * The rate-limit policy and limit an answer carries repeat from one answer of a route to the next,
 * so the response builder keeps each pair of values in a prebuilt set: every answer must still
 * carry exactly its own values, whichever window is closest to refusing, and however many pairs.
 */
import { afterEach, expect, test } from "bun:test";
import {
  createResponseHeaders,
  MAX_STEADY_SETS,
} from "../../src/plugins/security-headers/response";
import { buildTestApp, send, type TestApp } from "../support/app";
import { ManualClock } from "../support/clock";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const STEADY = ["ratelimit-policy", "x-ratelimit-limit"] as const;

test("each answer carries its own steady values and its own varying ones, past the cap too", () => {
  const responses = createResponseHeaders({ fixed: { "x-fixed": "1" }, steady: STEADY });
  const answer = (policy: string, limit: string, remaining: string, route = "/r") =>
    responses.respond(
      route,
      {
        "ratelimit-policy": policy,
        "x-ratelimit-limit": limit,
        "x-ratelimit-remaining": remaining,
      },
      { ok: true },
      200,
    ).headers;
  // One policy, two limits (the closest window changed), and back: each answer its own limit.
  for (const limit of ["4", "6", "4", "6"]) {
    expect(answer('"same"', limit, "1", "/s").get("x-ratelimit-limit")).toBe(limit);
    expect(answer(`"other-${limit}"`, "5", "1", "/s").get("ratelimit-policy")).toBe(
      `"other-${limit}"`,
    );
  }
  for (let i = 0; i < MAX_STEADY_SETS + 20; i++) {
    // Each pair twice (the second from its prebuilt set, once it has one), then the first again.
    for (const remaining of [String(i), String(i + 1)]) {
      const headers = answer(`"p${i}";q=${i}`, String(i), remaining);
      expect({
        policy: headers.get("ratelimit-policy"),
        limit: headers.get("x-ratelimit-limit"),
        remaining: headers.get("x-ratelimit-remaining"),
        fixed: headers.get("x-fixed"),
      }).toEqual({ policy: `"p${i}";q=${i}`, limit: String(i), remaining, fixed: "1" });
    }
    const first = answer('"p0";q=0', "0", "7");
    expect([first.get("ratelimit-policy"), first.get("x-ratelimit-limit")]).toEqual([
      '"p0";q=0',
      "0",
    ]);
  }
  // A route with fixed headers of its own keeps them with the steady values.
  const routed = createResponseHeaders({
    fixed: { "x-fixed": "1" },
    byRoute: new Map([["/docs", { "x-fixed": "html" }]]),
    steady: STEADY,
  });
  const docs = routed.respond(
    "/docs",
    { "ratelimit-policy": "a", "x-ratelimit-limit": "3" },
    "x",
    200,
  );
  const api = routed.respond(
    "/api",
    { "ratelimit-policy": "a", "x-ratelimit-limit": "3" },
    "x",
    200,
  );
  expect([docs.headers.get("x-fixed"), api.headers.get("x-fixed")]).toEqual(["html", "1"]);
  expect(docs.headers.get("x-ratelimit-limit")).toBe("3");
  // Only one of the two, or a value that is no string: set as sent, nothing kept.
  const partial = routed.respond("/api", { "x-ratelimit-limit": "9" }, null, 204);
  expect([
    partial.headers.get("x-ratelimit-limit"),
    partial.headers.get("ratelimit-policy"),
  ]).toEqual(["9", null]);
});

test("an answer that cannot be built leaves every rate-limit value for the error answer (probe 21b)", () => {
  const responses = createResponseHeaders({ fixed: { "x-fixed": "1" }, steady: STEADY });
  const set: Record<string, unknown> = {
    "ratelimit-policy": '"default";q=6;w=60',
    "x-ratelimit-limit": "6",
    "x-ratelimit-remaining": "5",
  };
  // JSON cannot hold a BigInt: the error handler answers instead, with what `set` still holds.
  expect(() => responses.respond("/r", set, { amount: 1n }, 200)).toThrow();
  expect(set).toEqual({
    "ratelimit-policy": '"default";q=6;w=60',
    "x-ratelimit-limit": "6",
    "x-ratelimit-remaining": "5",
  });
  const answered = responses.respond("", set, '{"status":500}', 500).headers;
  expect([answered.get("ratelimit-policy"), answered.get("x-ratelimit-limit")]).toEqual([
    '"default";q=6;w=60',
    "6",
  ]);
});

test("over HTTP: the limit shown follows the window closest to refusing, answer by answer", async () => {
  const clock = new ManualClock();
  current = buildTestApp({
    clock,
    env: { RATE_LIMIT_PER_MINUTE: "6", RATE_LIMIT_BURST: "4" },
    ipBlockSettings: {
      thresholds: {
        ratelimit: { count: 1000, windowMs: 60_000 },
        login: { count: 1000, windowMs: 60_000 },
        principal: { count: 1000, windowMs: 60_000 },
      },
    },
  });
  const shown = async (peer = "192.0.2.44") => {
    const response = await send(current!, "/openapi.json", { peer });
    return [
      response.status,
      response.headers.get("x-ratelimit-limit"),
      response.headers.get("x-ratelimit-remaining"),
      response.headers.get("ratelimit-policy"),
    ];
  };
  const policy = '"default";q=6;w=60, "default.burst";q=4;w=10';
  // The burst window is closest at first: its limit.
  expect(await shown()).toEqual([200, "4", "3", policy]);
  expect(await shown()).toEqual([200, "4", "2", policy]);
  expect(await shown()).toEqual([200, "4", "1", policy]);
  expect(await shown()).toEqual([200, "4", "0", policy]);
  // Two burst windows on, the minute's window is the closer one: its limit, on the same route.
  clock.advance(20_000);
  expect(await shown()).toEqual([200, "6", "1", policy]);
  expect(await shown()).toEqual([200, "6", "0", policy]);
  // Another client on the same route: the burst's limit again, beside the first client's.
  expect(await shown("192.0.2.45")).toEqual([200, "4", "3", policy]);
  const refused = await send(current!, "/openapi.json", { peer: "192.0.2.44" });
  expect(refused.status).toBe(429);
  expect(refused.headers.get("x-ratelimit-limit")).toBe("6");
  expect(refused.headers.get("ratelimit-policy")).toBe(policy);
});
