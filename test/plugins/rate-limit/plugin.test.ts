import { afterEach, describe, expect, test } from "bun:test";
import type { LimiterStore } from "../../../src/plugins/rate-limit/store";
import { buildTestApp, failingLimiterStore, send, type TestApp } from "../../support/app";
import { ManualClock } from "../../support/clock";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const limited = (env: Record<string, string> = {}, clock = new ManualClock()) => {
  current = buildTestApp({
    env: { RATE_LIMIT_PER_MINUTE: "3", RATE_LIMIT_BURST: "100", ...env },
    clock,
    // Blocking is tested on its own; here it would hide the limiter's answers.
    ipBlockSettings: {
      thresholds: {
        ratelimit: { count: 1000, windowMs: 60_000 },
        login: { count: 1000, windowMs: 60_000 },
        principal: { count: 1000, windowMs: 60_000 },
      },
    },
  });
  return current;
};

/** Scraped from another address: /metrics is rate limited per address like everything else. */
async function metricsText(target: { app: TestApp["app"] }): Promise<string> {
  return (await send(target, "/metrics", { peer: "192.0.2.250" })).text();
}

describe("rate limiting", () => {
  test("limited responses carry the X-RateLimit and IETF RateLimit headers", async () => {
    const target = limited();
    const response = await send(target, "/openapi.json");
    expect(response.status).toBe(200);
    expect(response.headers.get("x-ratelimit-limit")).toBe("3");
    expect(response.headers.get("x-ratelimit-remaining")).toBe("2");
    expect(Number(response.headers.get("x-ratelimit-reset"))).toBeGreaterThan(0);
    expect(response.headers.get("ratelimit-policy")).toBe('"default";q=3;w=60');
    expect(response.headers.get("ratelimit")).toMatch(/^"default";r=2;t=\d+$/);
  });

  test("concurrent requests see the remaining quota count down one by one, not one figure each", async () => {
    // Below the leasing floor: every request is decided by the store, in groups per event-loop turn.
    const target = limited({ RATE_LIMIT_PER_MINUTE: "40" });
    const responses = await Promise.all(
      Array.from({ length: 45 }, () => send(target, "/openapi.json", { peer: "192.0.2.7" })),
    );
    const admitted = responses.filter((r) => r.status === 200);
    expect(admitted).toHaveLength(40);
    const remaining = admitted.map((r) => Number(r.headers.get("x-ratelimit-remaining")));
    expect(remaining.sort((a, b) => b - a)).toEqual(Array.from({ length: 40 }, (_, i) => 39 - i));
    const ietf = admitted.map((r) => r.headers.get("ratelimit")!.match(/;r=(\d+);/)![1]);
    expect(new Set(ietf).size).toBe(40);
  });

  test("a hot client admitted from leases: every answer its own count, and exactly the limit admitted", async () => {
    // Over the leasing floor: most requests are admitted from a lease without meeting the store.
    const target = limited({ RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" });
    const remaining: number[] = [];
    let refused = 0;
    for (let batch = 0; batch < 21; batch++) {
      const responses = await Promise.all(
        Array.from({ length: 50 }, () => send(target, "/openapi.json", { peer: "192.0.2.8" })),
      );
      for (const response of responses) {
        if (response.status === 429) refused++;
        else {
          expect(response.status).toBe(200);
          const shown = Number(response.headers.get("x-ratelimit-remaining"));
          expect(response.headers.get("ratelimit")).toMatch(new RegExp(`;r=${shown};`));
          remaining.push(shown);
        }
      }
    }
    expect(remaining).toHaveLength(1000);
    expect(refused).toBe(50);
    expect(remaining.sort((a, b) => b - a)).toEqual(
      Array.from({ length: 1000 }, (_, i) => 999 - i),
    );
  });

  test("over the limit: 429 problem+json with Retry-After, a metric and an audit row", async () => {
    const target = limited();
    for (let i = 0; i < 3; i++) expect((await send(target, "/openapi.json")).status).toBe(200);
    const refused = await send(target, "/openapi.json");
    expect(refused.status).toBe(429);
    expect(refused.headers.get("content-type")).toBe("application/problem+json");
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(refused.headers.get("x-ratelimit-remaining")).toBe("0");
    const body = (await refused.json()) as { code: string; requestId: string };
    expect(body.code).toBe("RATE_LIMITED");
    expect(body.requestId).toBe(refused.headers.get("x-request-id")!);
    // Security headers are on refusals too.
    expect(refused.headers.get("x-content-type-options")).toBe("nosniff");

    expect(await metricsText(target)).toContain('rate_limit_rejections_total{policy="default"} 1');
    target.services.audit.flush();
    const row = target.db.$client
      .query("SELECT type, ip, outcome, detail FROM audit_events WHERE type = 'ratelimit.rejected'")
      .get();
    expect(row).toEqual({
      type: "ratelimit.rejected",
      ip: "127.0.0.1",
      outcome: "denied",
      detail: '{"key":"ip","policy":"default"}',
    });
    const logged = target.logs.entries.find((e) => e.status === 429);
    // Refused before routing, still logged under the route it was aimed at (and its path).
    expect(logged).toMatchObject({ route: "/openapi.json", path: "/openapi.json" });
  });

  test("404s of a scanner count against the default policy", async () => {
    const target = limited();
    for (let i = 0; i < 3; i++) expect((await send(target, `/api/nope-${i}`)).status).toBe(404);
    expect((await send(target, "/webhooks/probe")).status).toBe(429);
  });

  test("the window slides: refused now, admitted after time passes", async () => {
    const clock = new ManualClock();
    const target = limited({}, clock);
    for (let i = 0; i < 3; i++) await send(target, "/openapi.json");
    const refused = await send(target, "/openapi.json");
    expect(refused.status).toBe(429);
    clock.advance(Number(refused.headers.get("retry-after")) * 1000);
    expect((await send(target, "/openapi.json")).status).toBe(200);
  });

  test("/health and /ready are never limited; loopback clients are", async () => {
    const target = limited({ RATE_LIMIT_PER_MINUTE: "1" });
    for (let i = 0; i < 5; i++) {
      expect((await send(target, "/health")).status).toBe(200);
      expect((await send(target, "/ready")).status).toBe(200);
    }
    expect((await send(target, "/openapi.json", { peer: "127.0.0.1" })).status).toBe(200);
    expect((await send(target, "/openapi.json", { peer: "127.0.0.1" })).status).toBe(429);
  });

  test("addresses in RATE_LIMIT_ALLOW_CIDRS are not limited", async () => {
    const target = limited({ RATE_LIMIT_PER_MINUTE: "1", RATE_LIMIT_ALLOW_CIDRS: "10.0.0.0/8" });
    for (let i = 0; i < 5; i++) {
      const response = await send(target, "/openapi.json", { peer: "10.1.2.3" });
      expect(response.status).toBe(200);
      expect(response.headers.get("x-ratelimit-limit")).toBeNull();
    }
    await send(target, "/openapi.json", { peer: "192.0.2.1" });
    expect((await send(target, "/openapi.json", { peer: "192.0.2.1" })).status).toBe(429);
  });

  test("IPv6 clients are keyed by their /64: rotating inside it does not help", async () => {
    const target = limited({ RATE_LIMIT_PER_MINUTE: "2" });
    expect((await send(target, "/openapi.json", { peer: "2001:db8:1:2::1" })).status).toBe(200);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:1:2::ffff" })).status).toBe(200);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:1:2:abcd::9" })).status).toBe(
      429,
    );
    // Another /64 is another client.
    expect((await send(target, "/openapi.json", { peer: "2001:db8:1:3::1" })).status).toBe(200);
  });

  test("spoofed X-Forwarded-For from an untrusted peer does not change the key", async () => {
    const target = limited({ RATE_LIMIT_PER_MINUTE: "1" });
    await send(target, "/openapi.json", { peer: "192.0.2.9" });
    const spoofed = await send(target, "/openapi.json", {
      peer: "192.0.2.9",
      headers: { "x-forwarded-for": "198.51.100.1" },
    });
    expect(spoofed.status).toBe(429);
  });

  test("route policies layer on the default: register allows 3 per minute per address", async () => {
    const target = limited({ RATE_LIMIT_PER_MINUTE: "60" });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const response = await send(target, "/api/auth/register", {
        body: { email: `a${i}@x.test` },
      });
      statuses.push(response.status);
      if (i === 0) {
        expect(response.headers.get("ratelimit-policy")).toContain('"register";q=3;w=60');
      }
    }
    // Without a password the body fails validation three times; the fourth is refused first.
    expect(statuses).toEqual([422, 422, 422, 429]);
    expect(await metricsText(target)).toContain('rate_limit_rejections_total{policy="register"} 1');
  });

  test("a request the default policy refuses counts against none of its route's: the route admits again once the burst passes, one at a time or at once (probe 46a F1)", async () => {
    const clock = new ManualClock();
    const target = limited({ RATE_LIMIT_PER_MINUTE: "60", RATE_LIMIT_BURST: "5" }, clock);
    for (const [peer, together] of [
      ["192.0.2.31", false],
      ["192.0.2.32", true],
    ] as const) {
      // The address's burst of five, spent on other routes.
      for (let i = 0; i < 5; i++) {
        expect((await send(target, "/openapi.json", { peer })).status).toBe(200);
      }
      const register = () =>
        send(target, "/api/auth/register", { body: { email: "a@x.test" }, peer });
      const refused = together
        ? await Promise.all([register(), register(), register()])
        : [await register(), await register(), await register()];
      expect(refused.map((response) => response.status)).toEqual([429, 429, 429]);
      await Bun.sleep(20);
      const counted = target.db.$client
        .query("SELECT current FROM rate_limit_counters WHERE policy = 'register' AND key = ?")
        .get(`ip:${peer}`) as { current: number } | null;
      expect([peer, counted?.current ?? 0]).toEqual([peer, 0]);
      // Once the burst window has passed the three registrations the address has are its own
      // (each a 422 here: no password), where they were spent by refusals never served.
      clock.advance(20_000);
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await register()).status);
      expect([peer, statuses]).toEqual([peer, [422, 422, 422]]);
    }
  });

  test("a refusal by the default policy is told the truth: the route's permit it gave back is left, and Retry-After is the burst's (probe 47a F2)", async () => {
    const clock = new ManualClock();
    const target = limited({ RATE_LIMIT_PER_MINUTE: "60", RATE_LIMIT_BURST: "5" }, clock);
    const peer = "192.0.2.33";
    const register = () =>
      send(target, "/api/auth/register", { body: { email: "a@x.test" }, peer });
    expect((await register()).status).toBe(422);
    expect((await register()).status).toBe(422);
    for (let i = 0; i < 3; i++) {
      expect((await send(target, "/openapi.json", { peer })).status).toBe(200);
    }
    // The route's last permit, taken and given back: one registration is left, and the wait is the
    // burst window's, not the route's minute.
    const refused = await register();
    expect(refused.status).toBe(429);
    expect(refused.headers.get("ratelimit")).not.toMatch(/"register";r=0/);
    // The burst window slides over two 10 s windows; the route's is a minute.
    expect(Number(refused.headers.get("retry-after"))).toBeLessThanOrEqual(20);
    clock.advance(Number(refused.headers.get("retry-after")) * 1000);
    expect((await register()).status).toBe(422);
  });

  test("sign-ups sent together past the default burst are each told the truth: the default refused them, the route's permits are left (probe 48a F3)", async () => {
    const clock = new ManualClock();
    const target = limited({ RATE_LIMIT_PER_MINUTE: "60", RATE_LIMIT_BURST: "5" }, clock);
    const peer = "192.0.2.34";
    // Three of the address's burst of five spent elsewhere: two are left, and the route's three.
    for (let i = 0; i < 3; i++) {
      expect((await send(target, "/openapi.json", { peer })).status).toBe(200);
    }
    const register = () =>
      send(target, "/api/auth/register", { body: { email: "a@x.test" }, peer });
    const responses = await Promise.all(Array.from({ length: 20 }, () => register()));
    const statuses = responses.map((response) => response.status);
    expect(statuses.filter((status) => status === 422)).toHaveLength(2);
    expect(statuses.filter((status) => status === 429)).toHaveLength(18);
    for (const refused of responses.filter((response) => response.status === 429)) {
      expect(refused.headers.get("ratelimit")).toMatch(/^"default\.burst";r=0;/);
      expect(Number(refused.headers.get("retry-after"))).toBeLessThanOrEqual(20);
    }
    const counted = target.db.$client
      .query("SELECT current FROM rate_limit_counters WHERE policy = 'register' AND key = ?")
      .get(`ip:${peer}`) as { current: number } | null;
    expect(counted?.current).toBe(2);
    // Once the burst has passed, the route's last registration is there, then the route is full.
    clock.advance(20_000);
    expect((await register()).status).toBe(422);
    const full = await register();
    expect(full.status).toBe(429);
    expect(full.headers.get("ratelimit")).toMatch(/^"register";r=0;/);
  });

  test("a refusal's Retry-After is the wait until every policy of the request admits, not the refusing one's alone: a retry made as told is admitted (probe 50a F1)", async () => {
    // 50 s into a minute: three sign-ups fill the route's minute.
    const clock = new ManualClock(50_000);
    const target = limited({ RATE_LIMIT_PER_MINUTE: "60", RATE_LIMIT_BURST: "5" }, clock);
    const peer = "192.0.2.35";
    const register = () =>
      send(target, "/api/auth/register", { body: { email: "a@x.test" }, peer });
    for (let i = 0; i < 3; i++) expect((await register()).status).toBe(422);
    // 15 s into the next minute the route has room again in 5 s; the default burst, filled now,
    // in 7 s.
    clock.advance(25_000);
    for (let i = 0; i < 5; i++) {
      expect((await send(target, "/openapi.json", { peer })).status).toBe(200);
    }
    const refused = await register();
    expect(refused.status).toBe(429);
    expect(refused.headers.get("ratelimit")).toMatch(/^"register";r=0;/);
    expect(refused.headers.get("retry-after")).toBe("7");
    clock.advance(Number(refused.headers.get("retry-after")) * 1000);
    expect((await register()).status).toBe(422);
  });

  test("a failing store lets public routes through and refuses auth routes, counting both", async () => {
    current = buildTestApp({ limiter: failingLimiterStore("database is locked") });
    const app = current.app;
    const open = await send({ app }, "/openapi.json");
    expect(open.status).toBe(200);
    const closed = await send({ app }, "/api/auth/login", { body: { email: "a@b.test" } });
    expect(closed.status).toBe(503);
    expect(closed.headers.get("retry-after")).toBe("1");
    expect(((await closed.json()) as { code: string }).code).toBe("SERVICE_UNAVAILABLE");
    const text = await metricsText({ app });
    // The scrape is limited too, and its own check failed open before the text was rendered.
    expect(text).toContain('rate_limit_store_errors_total{mode="open"} 2');
    expect(text).toContain('rate_limit_store_errors_total{mode="closed"} 1');
    expect(current.logs.text).toContain("rate-limit store failed");
  });
});

describe("a violation the store cannot count", () => {
  /** Counts per policy and key in one window; fails every check of a violation counter. */
  function storeFailingViolations(): LimiterStore {
    const counts = new Map<string, number>();
    return {
      check: async (checks) => {
        if (checks.some((c) => c.policy.id.startsWith("violations."))) {
          throw new Error("SQLITE_FULL: database or disk is full");
        }
        return checks.map(({ policy, key, now }) => {
          const id = `${policy.id} ${key}`;
          const current = (counts.get(id) ?? 0) + 1;
          const admitted = current <= Math.min(policy.limit, policy.burstLimit);
          if (admitted) counts.set(id, current);
          const windowStart = now - (now % policy.windowMs);
          const counted = admitted ? current : current - 1;
          return {
            windowStart,
            previous: 0,
            current: counted,
            burstWindowStart: now - (now % 10_000),
            burstPrevious: 0,
            burstCurrent: counted,
            admitted,
          };
        });
      },
      giveBack: () => {},
      reset: async () => {},
      prune: () => 0,
      close: () => {},
    };
  }

  test("a refusal stays 429 and a failed login 401; the lost count is logged and counted open", async () => {
    current = buildTestApp({
      env: { RATE_LIMIT_PER_MINUTE: "3", RATE_LIMIT_BURST: "100" },
      limiter: storeFailingViolations(),
    });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      statuses.push((await send(current, "/openapi.json", { peer: "192.0.2.40" })).status);
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    const login = await send(current, "/api/auth/login", {
      body: { email: "nobody@example.test", password: "wrong password 1234" },
      peer: "192.0.2.41",
    });
    expect(login.status).toBe(401);
    const text = await metricsText(current);
    // Two refusals and one failed login, each a violation not counted.
    expect(text).toContain('rate_limit_store_errors_total{mode="open"} 3');
    expect(text).toContain('rate_limit_rejections_total{policy="default"} 2');
    const lost = current.logs.entries.filter(
      (entry) => entry.msg === "rate-limit store failed: a violation was not counted",
    );
    // The second lost count of one policy within 10 s is only counted, then summed up.
    expect(lost.map((entry) => entry.policy)).toEqual(["violations.ratelimit", "violations.login"]);
    expect(lost.every((entry) => typeof entry.requestId === "string")).toBe(true);
    current.logger.flush();
    expect(current.logs.entries.filter((entry) => entry.repeated !== undefined)).toMatchObject([
      {
        repeated:
          "rate-limit store failed: a violation was not counted (violations.ratelimit) — Error: SQLITE_FULL: database or disk is full",
        count: 1,
      },
    ]);
  });
});

test("a block the file cannot take leaves the refusal a 429; it is made at the next violation once the file is back", async () => {
  current = buildTestApp({
    env: { RATE_LIMIT_PER_MINUTE: "1", RATE_LIMIT_BURST: "100", IP_BLOCK_RATE_LIMIT_REFUSALS: "2" },
  });
  const sqlite = current.db.$client;
  // What a full disk does to the block's insert, and to nothing else.
  sqlite.run(
    "CREATE TRIGGER full_disk BEFORE INSERT ON ip_blocks BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
  );
  const peer = "192.0.2.42";
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++)
    statuses.push((await send(current, "/openapi.json", { peer })).status);
  expect(statuses).toEqual([200, 429, 429, 429]);
  expect(sqlite.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 0 });
  const lost = current.logs.entries.filter(
    (entry) => entry.msg === "rate-limit store failed: a block was not made",
  );
  expect(lost.length).toBe(1);
  expect(typeof lost[0]!.requestId).toBe("string");
  expect(await metricsText(current)).toContain('rate_limit_store_errors_total{mode="open"} 2');
  sqlite.run("DROP TRIGGER full_disk");
  expect((await send(current, "/openapi.json", { peer })).status).toBe(429);
  expect((await send(current, "/openapi.json", { peer })).status).toBe(403);
  expect(sqlite.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 1 });
});

describe("keys for authenticated requests", () => {
  test("each principal has its own budget, whatever address it comes from", async () => {
    const target = limited({ RATE_LIMIT_PER_MINUTE: "3" });
    // Keys keep signing up out of the picture: registration and login have their own limits.
    const { createKey } = await import("../../support/auth");
    const alice = createKey(target, ["chat"]);
    const bob = createKey(target, ["chat"]);
    const office = "198.51.100.50";
    const status = async (key: string | null, peer = office) =>
      (await send(target, "/api/auth/me", { headers: key ? { "x-api-key": key } : {}, peer }))
        .status;
    // Alice uses her 3, from one address then another: the budget follows her.
    expect([
      await status(alice.key),
      await status(alice.key, "192.0.2.77"),
      await status(alice.key),
    ]).toEqual([200, 200, 200]);
    expect(await status(alice.key, "192.0.2.78")).toBe(429);
    // Bob, behind the same NAT, still has his own.
    expect(await status(bob.key)).toBe(200);
    // Anonymous requests from that address are counted by address, apart from both.
    expect(await status(null)).toBe(401);
    const response = await send(target, "/api/auth/me", { peer: office });
    expect(response.headers.get("x-ratelimit-remaining")).toBe("1");
  });

  test("with the address's lease in use, a credential is still counted by its principal", async () => {
    // Over the leasing floor: the address's anonymous requests are admitted from a lease.
    const target = limited({ RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" });
    const { createKey } = await import("../../support/auth");
    const alice = createKey(target, ["chat"]);
    const office = "198.51.100.60";
    const remainingAfter = async (headers: Record<string, string> = {}) => {
      const response = await send(target, "/api/auth/me", { headers, peer: office });
      return [response.status, Number(response.headers.get("x-ratelimit-remaining"))];
    };
    for (let i = 0; i < 299; i++) await remainingAfter();
    expect(await remainingAfter()).toEqual([401, 700]);
    // Alice's key: her own count, not the address's lease; the next anonymous one goes on from 700.
    expect(await remainingAfter({ "x-api-key": alice.key })).toEqual([200, 999]);
    expect(await remainingAfter({ authorization: `Bearer ${alice.key}` })).toEqual([200, 998]);
    expect(await remainingAfter()).toEqual([401, 699]);
    // A credential that does not verify is the address's, in any spelling.
    expect(await remainingAfter({ "x-api-key": "pal_forged" })).toEqual([401, 698]);
    expect(await remainingAfter({ authorization: "BEARER forged.token.x" })).toEqual([401, 697]);
    expect(await remainingAfter({ authorization: "" })).toEqual([401, 696]);
  });

  test("a hot principal admitted from its leases: every answer its own count, exactly the limit, whatever the credential", async () => {
    // Over the leasing floor. A cached token and an API key are known at once, so their requests
    // are counted against the principal by a lease without waiting; the token's first request is
    // verified first (not cached yet), and the burst arrives while it is.
    const target = limited({ RATE_LIMIT_PER_MINUTE: "300", RATE_LIMIT_BURST: "300" });
    const { bearer, createKey, signUp } = await import("../../support/auth");
    const user = await signUp(target, { peer: "10.20.0.1" });
    const credentials: Record<string, Record<string, string>> = {
      "access token": bearer(user.accessToken),
      "API key": { "x-api-key": createKey(target, ["chat"]).key },
      "API key as bearer": bearer(createKey(target, ["chat"]).key),
    };
    for (const [name, headers] of Object.entries(credentials)) {
      const remaining: number[] = [];
      let refused = 0;
      for (let batch = 0; batch < 7; batch++) {
        const responses = await Promise.all(
          // Each from its own address: the budget is the principal's, not an address's.
          Array.from({ length: 50 }, (_, i) =>
            send(target, "/api/auth/me", { headers, peer: `192.0.2.${i + 1}` }),
          ),
        );
        for (const response of responses) {
          if (response.status === 429) refused++;
          else {
            expect({ name, status: response.status }).toEqual({ name, status: 200 });
            remaining.push(Number(response.headers.get("x-ratelimit-remaining")));
          }
        }
      }
      expect({ name, admitted: remaining.length, refused }).toEqual({
        name,
        admitted: 300,
        refused: 50,
      });
      expect(remaining.sort((a, b) => b - a)).toEqual(
        Array.from({ length: 300 }, (_, i) => 299 - i),
      );
    }
  });

  test("an invalid credential is counted by address, not by the principal it claims", async () => {
    const target = limited({ RATE_LIMIT_PER_MINUTE: "2" });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await send(target, "/api/auth/me", {
        headers: { authorization: `Bearer forged.token.${i}` },
        peer: "192.0.2.90",
      });
      statuses.push(response.status);
    }
    expect(statuses).toEqual([401, 401, 429]);
  });
});

describe("a clock set back", () => {
  // Decided in the window the key was counted in, a check stamped before it counts that window's
  // requests as if they had all come in the last minute: refused, but no step towards a block.
  test("refusals decided in a window ahead of this clock block nobody", async () => {
    const clock = new ManualClock(1_000);
    current = buildTestApp({
      clock,
      env: {
        RATE_LIMIT_PER_MINUTE: "10",
        RATE_LIMIT_BURST: "10",
        IP_BLOCK_RATE_LIMIT_REFUSALS: "3",
      },
    });
    const target = current;
    const peer = "198.51.100.40";
    clock.advance(60_000);
    for (let i = 0; i < 10; i++) {
      expect((await send(target, "/openapi.json", { peer })).status).toBe(200);
    }
    clock.advance(-30_000);
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++)
      statuses.push((await send(target, "/openapi.json", { peer })).status);
    expect(statuses).toEqual([429, 429, 429, 429, 429, 429]);
    expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 0 });
    // Counted and audited as refusals all the same.
    const metrics = await (await send(target, "/metrics", { peer: "192.0.2.250" })).text();
    expect(metrics).toContain('rate_limit_rejections_total{policy="default"} 6');
    // Once the clock is back in that window, refusals count towards a block again.
    clock.advance(31_000);
    for (let i = 0; i < 3; i++)
      expect((await send(target, "/openapi.json", { peer })).status).toBe(429);
    expect((await send(target, "/openapi.json", { peer })).status).toBe(403);
  });
});
