/**
 * What a policy counts per is a property of the policy, not of what the request carries; and whose
 * violation a refusal is follows the same rule.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { Scope } from "../../../src/plugins/auth/principal";
import { buildTestApp, send, type TestApp } from "../../support/app";
import {
  bearer,
  createKey,
  logIn,
  type Session,
  STRONG_PASSWORD,
  signUp,
} from "../../support/auth";
import { ManualClock } from "../../support/clock";
import { cookieHeader, cookiesOf } from "../../support/cookies";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const MINUTE = 60_000;
const PEER = "203.0.113.50";

const codeOf = async (response: Response) => ((await response.json()) as { code: string }).code;

async function scrape(target: TestApp, headers: Record<string, string> = {}, peer = "192.0.2.250") {
  return send(target, "/metrics", { headers, peer });
}

/** Each credential a client could attach to a request. */
async function credentialsFor(target: TestApp, user: Session) {
  const { key } = createKey(target, ["chat", "payments"] as Scope[], user.userId);
  return {
    none: {},
    bearer: bearer(user.accessToken),
    "api key header": { "x-api-key": key },
    "api key bearer": bearer(key),
    "bad bearer": bearer("not.a.token"),
  } as Record<string, Record<string, string>>;
}

/** An export's status, its body read to its end (a user's exports are sent one at a time). */
async function exportStatus(target: TestApp, init: Parameters<typeof send>[2]): Promise<number> {
  const response = await send(target, "/api/me/export", init);
  await response.text();
  return response.status;
}

describe("address-keyed policies stay per address whatever the request carries", () => {
  const cases = [
    {
      policy: "register",
      path: "/api/auth/register",
      body: (i: number) => ({
        email: `k${i}-${Date.now()}@example.test`,
        password: STRONG_PASSWORD,
      }),
    },
    {
      policy: "login",
      path: "/api/auth/login",
      body: (i: number) => ({ email: `nobody${i}@example.test`, password: "wrong-password-123" }),
    },
    {
      policy: "refresh",
      path: "/api/auth/refresh",
      body: () => ({ refreshToken: "x".repeat(40) }),
    },
    { policy: "metrics", path: "/metrics", body: () => undefined },
  ];
  for (const { policy, path, body } of cases) {
    test(`${policy}: a credential does not buy a fresh budget`, async () => {
      current = buildTestApp({
        env: {
          [`RATE_LIMIT_${policy.toUpperCase()}`]: "2",
          RATE_LIMIT_PER_MINUTE: "1000",
          RATE_LIMIT_BURST: "1000",
          IP_BLOCK_RATE_LIMIT_REFUSALS: "0",
          IP_BLOCK_FAILED_LOGINS: "0",
        },
      });
      const user = await signUp(current, { peer: "10.1.1.1" });
      const credentials = await credentialsFor(current, user);
      const statuses: Record<string, number> = {};
      let i = 0;
      for (const [name, headers] of Object.entries(credentials)) {
        const response = await send(current, path, {
          method: path === "/metrics" ? "GET" : "POST",
          headers,
          body: body(i++),
          peer: PEER,
        });
        statuses[name] = response.status;
        if (i > 2) expect({ name, status: response.status }).toEqual({ name, status: 429 });
      }
      expect(Object.values(statuses).filter((status) => status === 429)).toHaveLength(3);
      // Another address still has its own budget.
      const other = await send(current, path, {
        method: path === "/metrics" ? "GET" : "POST",
        body: body(i++),
        peer: "203.0.113.51",
      });
      expect(other.status).not.toBe(429);
    });
  }
});

describe("principal-keyed policies", () => {
  test("two users behind one address each have their own budget", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PRIVACY: "2" } });
    const alice = await signUp(current, { peer: "10.1.1.1" });
    const bob = await signUp(current, { peer: "10.1.1.2" });
    const exportAs = (user: Session) =>
      send(current!, "/api/me/export", { headers: bearer(user.accessToken), peer: PEER });
    const statuses = [];
    for (const user of [alice, alice, alice, bob, bob]) {
      const response = await exportAs(user);
      // Read to its end: a user's exports are sent one at a time.
      await response.text();
      statuses.push(response.status);
    }
    expect(statuses).toEqual([200, 200, 429, 200, 200]);
  });

  test("anonymous requests to a principal-keyed route count per address", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PRIVACY: "2", IP_BLOCK_RATE_LIMIT_REFUSALS: "0" } });
    const user = await signUp(current, { peer: "10.1.1.1" });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push(await exportStatus(current, { peer: PEER }));
    expect(statuses).toEqual([401, 401, 429]);
    // The signed-in user from the same address is not charged for them.
    const own = await send(current, "/api/me/export", {
      headers: bearer(user.accessToken),
      peer: PEER,
    });
    expect(own.status).toBe(200);
  });
});

describe("the session cookie alone (probe 32c F1)", () => {
  /** A user signed in in browser mode, with a bearer token too: cookies, CSRF token, token. */
  const browserUser = async (target: TestApp) => {
    const user = await signUp(target, { peer: "10.1.1.1" });
    const login = await send(target, "/api/auth/login?mode=cookie", {
      body: { email: user.email, password: STRONG_PASSWORD },
      peer: "10.1.1.2",
    });
    const jar = cookiesOf(login);
    const csrf = await send(target, "/api/auth/csrf", {
      headers: { cookie: cookieHeader(jar) },
      peer: "10.1.1.3",
    });
    const { token } = (await csrf.json()) as { token: string };
    return {
      user,
      ambient: { cookie: cookieHeader(jar) },
      proven: { cookie: cookieHeader({ ...jar, ...cookiesOf(csrf) }), "x-csrf-token": token },
    };
  };

  test("requests a same-site page could forge count by address: they neither spend the user's budget nor lock the user out", async () => {
    const clock = new ManualClock();
    current = buildTestApp({
      clock,
      env: { RATE_LIMIT_PRIVACY: "2", RATE_LIMIT_BURST: "100", IP_BLOCK_RATE_LIMIT_REFUSALS: "0" },
    });
    const victim = await browserUser(current);
    clock.advance(MINUTE);
    // Forged: the cookie only, from pages at many addresses (an allowed sibling origin's: any
    // other is refused before the limit); each is refused by CSRF, none by the user's budget,
    // however many there are.
    const forged = [];
    for (let i = 1; i <= 8; i++) {
      const response = await send(current, "/api/me", {
        method: "DELETE",
        headers: {
          ...victim.ambient,
          "sec-fetch-site": "same-site",
          origin: "http://localhost:3000",
        },
        peer: `198.51.100.${i}`,
      });
      forged.push(`${response.status} ${await codeOf(response)}`);
    }
    expect(forged).toEqual(Array(8).fill("403 CSRF_FAILED"));
    // Forged exports too: refused by CSRF (the export asks for the token on reads too: probe
    // 33a F1), and counted by the address they came from.
    const reads = [];
    for (let i = 0; i < 3; i++) {
      reads.push(await exportStatus(current, { headers: victim.ambient, peer: "198.51.100.9" }));
    }
    expect(reads).toEqual([403, 403, 429]);
    // The user's own requests still have the whole budget, by token and by the page's cookie.
    const own = [];
    own.push(
      await exportStatus(current, {
        headers: bearer(victim.user.accessToken),
        peer: PEER,
      }),
    );
    own.push(await exportStatus(current, { headers: victim.proven, peer: "10.9.9.9" }));
    own.push(
      await exportStatus(current, {
        headers: bearer(victim.user.accessToken),
        peer: PEER,
      }),
    );
    expect(own).toEqual([200, 200, 429]);
    const lockouts = current.db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE type = 'auth.locked_out'")
      .get() as { n: number };
    expect(lockouts.n).toBe(0);
  });

  test("the page's own requests (the cookie and a valid X-CSRF-Token) count against the user wherever they come from", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock, env: { RATE_LIMIT_PRIVACY: "2", RATE_LIMIT_BURST: "100" } });
    const browser = await browserUser(current);
    clock.advance(MINUTE);
    const statuses = [];
    for (let i = 1; i <= 3; i++) {
      statuses.push(await exportStatus(current, { headers: browser.proven, peer: `10.3.0.${i}` }));
    }
    expect(statuses).toEqual([200, 200, 429]);
    // Marked cross-site, or with another token, the same cookie proves nothing: counted by
    // address (its own budget untouched above), and refused by CSRF.
    const crossSite = await send(current, "/api/me/export", {
      headers: { ...browser.proven, "sec-fetch-site": "cross-site" },
      peer: "10.3.0.9",
    });
    expect(crossSite.status).toBe(403);
    const otherToken = await send(current, "/api/me/export", {
      headers: { ...browser.proven, "x-csrf-token": "1.x.y" },
      peer: "10.3.0.10",
    });
    expect(otherToken.status).toBe(403);
  });

  test("a locked-out user's cookie is refused without a token too", async () => {
    const clock = new ManualClock();
    current = buildTestApp({
      clock,
      env: {
        RATE_LIMIT_PER_MINUTE: "2",
        RATE_LIMIT_BURST: "100",
        IP_BLOCK_RATE_LIMIT_REFUSALS: "3",
      },
    });
    const browser = await browserUser(current);
    clock.advance(MINUTE);
    for (let i = 0; i < 6; i++) {
      await send(current, "/api/auth/me", {
        headers: bearer(browser.user.accessToken),
        peer: PEER,
      });
    }
    const locked = await send(current, "/api/auth/me", {
      headers: browser.ambient,
      peer: "10.4.4.4",
    });
    expect(locked.status).toBe(429);
    expect(await locked.text()).toContain("Too many refused requests from this credential");
  });
});

describe("whose violation a refusal is", () => {
  const lockoutApp = (clock: ManualClock, env: Record<string, string> = {}) =>
    buildTestApp({
      clock,
      env: {
        RATE_LIMIT_PER_MINUTE: "2",
        RATE_LIMIT_BURST: "100",
        IP_BLOCK_RATE_LIMIT_REFUSALS: "3",
        ...env,
      },
    });

  test("a principal's refusals lock out the principal, never the address it shares", async () => {
    const clock = new ManualClock();
    current = lockoutApp(clock);
    const noisy = await signUp(current, { peer: "10.1.1.1" });
    const quiet = await signUp(current, { peer: "10.1.1.2" });
    clock.advance(MINUTE);
    const asNoisy = () =>
      send(current!, "/api/auth/me", { headers: bearer(noisy.accessToken), peer: PEER });
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await asNoisy()).status);
    expect(statuses).toEqual([200, 200, 429, 429, 429, 429]);

    // The office behind the same address is not blocked: another user and anonymous callers pass.
    const quietMe = await send(current, "/api/auth/me", {
      headers: bearer(quiet.accessToken),
      peer: PEER,
    });
    expect(quietMe.status).toBe(200);
    expect((await send(current, "/openapi.json", { peer: PEER })).status).toBe(200);
    expect(await (await scrape(current)).text()).toContain("ip_blocks_active 0");

    // The noisy principal is locked out past its window, with a Retry-After up to the lockout's end.
    clock.advance(2 * MINUTE);
    const locked = await asNoisy();
    expect(locked.status).toBe(429);
    expect(await codeOf(locked)).toBe("RATE_LIMITED");
    expect(Number(locked.headers.get("retry-after"))).toBe(3 * 60);
    const row = current.db.$client
      .query("SELECT actor, ip FROM audit_events WHERE type = 'auth.locked_out'")
      .get() as { actor: string; ip: string | null };
    expect(row).toEqual({ actor: `user:${noisy.userId}`, ip: null });
    // Its API keys are other principals, with budgets of their own.
    clock.advance(5 * MINUTE);
    expect((await asNoisy()).status).toBe(200);
  });

  /** `rate_limit_rejections_total` for one policy label, 0 when the series is not exported yet. */
  const rejectionsOf = async (target: TestApp, policy: string) => {
    const text = await (await scrape(target)).text();
    const line = text
      .split("\n")
      .find((entry) => entry.startsWith(`rate_limit_rejections_total{policy="${policy}"} `));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
  };

  for (const kind of ["user token", "API key"] as const) {
    test(`every refusal of a locked-out principal (${kind}) is counted, whatever it asks for`, async () => {
      const clock = new ManualClock();
      current = lockoutApp(clock);
      // An admin's key may carry the metrics scope, and so read /metrics while not locked out.
      const role = kind === "user token" ? "user" : "admin";
      const noisy = await signUp(current, { peer: "10.1.1.1", role });
      const credential =
        kind === "user token"
          ? bearer(noisy.accessToken)
          : { "x-api-key": createKey(current, ["chat", "metrics"] as Scope[], noisy.userId).key };
      clock.advance(MINUTE);
      const statuses = [];
      for (let i = 0; i < 6; i++) {
        statuses.push(
          (await send(current, "/api/auth/me", { headers: credential, peer: PEER })).status,
        );
      }
      expect(statuses).toEqual([200, 200, 429, 429, 429, 429]);
      const lockouts = current.db.$client
        .query("SELECT count(*) AS n FROM audit_events WHERE type = 'auth.locked_out'")
        .get() as { n: number };
      expect(lockouts.n).toBe(1);
      const defaultBefore = await rejectionsOf(current, "default");
      const lockedBefore = await rejectionsOf(current, "locked_out");

      // Past its window, with the same credential, on every spelling and method of routes that
      // count it, and on routes counted by address alone (a locked-out key with the metrics scope
      // read /metrics on: probe 69c F1): each is refused by the lockout alone, and each refusal
      // is counted.
      clock.advance(2 * MINUTE);
      const attempts: [string, string][] = [
        ["GET", "/api/auth/me"],
        ["GET", "/api/auth/me/"],
        ["HEAD", "/api/auth/me"],
        ["GET", "/API/auth/me"],
        ["GET", "/api/me/export"],
        ["POST", "/api/chat"],
        ["GET", "/metrics"],
        ["HEAD", "/metrics"],
        ["GET", "/metrics/"],
        ["POST", "/api/auth/login"],
        ["POST", "/api/auth/login/"],
      ];
      for (const [method, path] of attempts) {
        const response = await send(current, path, {
          method,
          headers: { ...credential, "content-type": "application/json" },
          peer: PEER,
          ...(method === "POST" ? { body: JSON.stringify({ message: "hi" }) } : {}),
        });
        expect(response.status).toBe(429);
        if (method !== "HEAD") expect(await codeOf(response)).toBe("RATE_LIMITED");
      }
      let refused = attempts.length;
      if (kind === "user token") {
        // A token this process has not verified yet (a new sign-in) is refused once verified, and
        // counted the same way; two such requests at once are counted twice.
        const fresh = bearer((await logIn(current, noisy.email, "10.1.1.9")).accessToken);
        const both = await Promise.all([
          send(current, "/api/auth/me", { headers: fresh, peer: PEER }),
          send(current, "/api/auth/me", { headers: fresh, peer: PEER }),
        ]);
        expect(both.map((response) => response.status)).toEqual([429, 429]);
        refused += 2;
      }
      expect(await rejectionsOf(current, "locked_out")).toBe(lockedBefore + refused);
      // No policy decided them: the route's limit is not what refused them.
      expect(await rejectionsOf(current, "default")).toBe(defaultBefore);
      // The lockout is audited once, when it is made; its refusals are counted, not audited.
      const after = current.db.$client
        .query("SELECT count(*) AS n FROM audit_events WHERE type = 'auth.locked_out'")
        .get() as { n: number };
      expect(after.n).toBe(1);
    });
  }

  test("a locked-out principal is refused from an allow-listed address too; others are not limited there", async () => {
    const clock = new ManualClock();
    current = lockoutApp(clock, { RATE_LIMIT_ALLOW_CIDRS: "10.50.0.0/16" });
    const noisy = await signUp(current, { peer: "10.1.1.1" });
    const other = await signUp(current, { peer: "10.1.1.2" });
    const key = createKey(current, ["chat"] as Scope[], noisy.userId).key;
    clock.advance(MINUTE);
    for (let i = 0; i < 6; i++) {
      await send(current, "/api/auth/me", { headers: bearer(noisy.accessToken), peer: PEER });
    }
    const lockedBefore = await rejectionsOf(current, "locked_out");
    const inside = "10.50.3.4";
    // Cached token, a token not yet verified (a new sign-in), both refused inside the allow list.
    const fresh = (await logIn(current, noisy.email, "10.1.1.9")).accessToken;
    for (const token of [noisy.accessToken, fresh]) {
      const refused = await send(current, "/api/auth/me", { headers: bearer(token), peer: inside });
      expect(refused.status).toBe(429);
      expect(await codeOf(refused)).toBe("RATE_LIMITED");
    }
    const chat = await send(current, "/api/chat", {
      headers: bearer(noisy.accessToken),
      body: { message: "hi" },
      peer: inside,
    });
    expect(chat.status).toBe(429);
    expect(await rejectionsOf(current, "locked_out")).toBe(lockedBefore + 3);
    // The allow list still limits no one else: another user, the user's own key (a principal of
    // its own) and anonymous callers pass however often they come.
    for (let i = 0; i < 5; i++) {
      for (const headers of [bearer(other.accessToken), { "x-api-key": key }, {}]) {
        const path = Object.keys(headers).length === 0 ? "/openapi.json" : "/api/auth/me";
        expect((await send(current, path, { headers, peer: inside })).status).toBe(200);
      }
    }
  });

  test("an anonymous client's refusals still block its address", async () => {
    const clock = new ManualClock();
    current = lockoutApp(clock);
    const statuses = [];
    for (let i = 0; i < 6; i++)
      statuses.push((await send(current, "/openapi.json", { peer: PEER })).status);
    expect(statuses).toEqual([200, 200, 429, 429, 429, 403]);
  });

  test("an admin sees the lockout among the blocks and can lift it", async () => {
    const clock = new ManualClock();
    current = lockoutApp(clock);
    const admin = await signUp(current, { role: "admin", peer: "10.1.1.3" });
    const noisy = await signUp(current, { peer: "10.1.1.1" });
    clock.advance(MINUTE);
    for (let i = 0; i < 6; i++) {
      await send(current, "/api/auth/me", { headers: bearer(noisy.accessToken), peer: PEER });
    }
    const list = await send(current, "/api/admin/blocks", { headers: bearer(admin.accessToken) });
    const { blocks } = (await list.json()) as { blocks: { id: number; address: string }[] };
    const lockout = blocks.find((block) => block.address === `user:${noisy.userId}`)!;
    expect(lockout).toBeDefined();
    const lifted = await send(current, `/api/admin/blocks/${lockout.id}`, {
      method: "DELETE",
      headers: bearer(admin.accessToken),
    });
    expect(lifted.status).toBe(204);
    clock.advance(2 * MINUTE);
    expect(
      (await send(current, "/api/auth/me", { headers: bearer(noisy.accessToken), peer: PEER }))
        .status,
    ).toBe(200);
  });
});

describe("/metrics is not a guessing oracle", () => {
  const token = "metrics-token-0123456789-abcdefghijklmnop";

  test("wrong tokens count as violations: the address is blocked, even for the right token", async () => {
    current = buildTestApp({ env: { METRICS_TOKEN: token, IP_BLOCK_FAILED_LOGINS: "3" } });
    const statuses = [];
    for (let i = 0; i < 4; i++) {
      statuses.push(
        (await scrape(current, bearer(`guess-${i}-0123456789abcdefghijklmnop`), PEER)).status,
      );
    }
    expect(statuses).toEqual([401, 401, 401, 403]);
    const blocked = await scrape(current, bearer(token), PEER);
    expect(blocked.status).toBe(403);
    expect(await codeOf(blocked)).toBe("IP_BLOCKED");
    const elsewhere = await scrape(current, bearer(token), "192.0.2.9");
    expect(elsewhere.status).toBe(200);
    const text = await elsewhere.text();
    expect(text).toContain('auth_failures_total{reason="metrics_token"} 3');
    expect(text).toContain("ip_blocks_active 1");
  });

  test("scrapes are limited per address by RATE_LIMIT_METRICS", async () => {
    current = buildTestApp({
      env: { METRICS_TOKEN: token, RATE_LIMIT_METRICS: "2", IP_BLOCK_FAILED_LOGINS: "0" },
    });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await scrape(current, bearer(token), PEER)).status);
    expect(statuses).toEqual([200, 200, 429]);
  });

  test("logging in from an address is not slowed by the metrics policy", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_METRICS: "1" } });
    const user = await signUp(current, { peer: PEER });
    expect((await scrape(current, {}, PEER)).status).toBe(200);
    expect((await scrape(current, {}, PEER)).status).toBe(429);
    expect((await logIn(current, user.email, PEER)).accessToken).toBeString();
  });
});
