/**
 * The per-address detail behind the security dashboard: GET /api/admin/security/summary and
 * `bun run cli audit:top`, from audit rows written by real refused requests.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { parseSince, SUMMARY_PART_ROWS } from "../../src/modules/admin/security-summary";
import { buildTestApp, send, type TestApp } from "../support/app";
import { bearer, STRONG_PASSWORD, signUp } from "../support/auth";
import { cliInProcess } from "../support/cli";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

interface Ranked {
  address?: string;
  principal?: string;
  count: number;
}
interface Category {
  total: number;
  addresses: Ranked[];
  principals: Ranked[];
}
interface Summary {
  since: string;
  until: string;
  tampered: number;
  failedLogins: Category;
  rateLimitRefusals: Category;
  signatureFailures: Category;
}

/**
 * Failed logins from three addresses (3, 2 and 2: the tie ordered by address), a privacy-policy
 * refusal of a signed-in user (counted per principal), register refusals of one address, and
 * signature failures; plus events the summary must not count (too old, other types).
 */
async function refusals(target: TestApp) {
  const victim = await signUp(target, { peer: "10.50.0.1" });
  const wrongLogin = (peer: string, email = victim.email) =>
    send(target, "/api/auth/login", { body: { email, password: `${STRONG_PASSWORD}x` }, peer });
  for (const peer of ["198.51.100.7", "198.51.100.7", "198.51.100.7"]) {
    expect((await wrongLogin(peer)).status).toBe(401);
  }
  for (const peer of ["203.0.113.9", "203.0.113.9", "192.0.2.4"]) {
    expect((await wrongLogin(peer, "nobody@example.test")).status).toBe(401);
  }
  expect((await wrongLogin("192.0.2.4")).status).toBe(401);

  // RATE_LIMIT_PRIVACY=1: the second export is refused, counted against the user.
  const heavy = await signUp(target, { peer: "10.50.0.2" });
  const exports = await Promise.all(
    [1, 2, 3].map(() =>
      send(target, "/api/me/export", { headers: bearer(heavy.accessToken), peer: "10.50.0.2" }),
    ),
  );
  expect(exports.map((r) => r.status).sort()).toEqual([200, 429, 429]);

  // Register is 3 per address: the 4th and 5th from one address are refused (no principal).
  for (let i = 0; i < 5; i++) {
    const response = await send(target, "/api/auth/register", {
      body: { email: `flood${i}@example.test`, password: STRONG_PASSWORD },
      peer: "198.51.100.200",
    });
    expect(response.status).toBe(i < 3 ? 201 : 429);
  }

  // No webhook route on this branch: signature failures recorded as the webhook modules do.
  for (const ip of ["203.0.113.50", "203.0.113.50", "203.0.113.51"]) {
    target.services.audit.record({
      type: "webhook.signature_failed",
      outcome: "denied",
      ip,
      route: "POST /webhooks/stripe",
      detail: { provider: "stripe" },
    });
  }
  // Outside the window, and another type: not counted.
  target.services.audit.record({
    type: "auth.login.failed",
    outcome: "failure",
    ip: "198.51.100.7",
    at: Date.now() - 3 * 24 * 60 * 60 * 1000,
  });
  target.services.audit.record({ type: "csrf.failed", outcome: "denied", ip: "198.51.100.7" });
  target.services.audit.flush();
  return { victim, heavy };
}

const summary = async (target: TestApp, token: string, query = "") => {
  const response = await send(target, `/api/admin/security/summary${query}`, {
    headers: bearer(token),
  });
  return { response, body: (await response.json()) as Summary & { code?: string } };
};

describe("GET /api/admin/security/summary", () => {
  test("admins only: anonymous 401, a user 403, an admin 200", async () => {
    current = buildTestApp();
    const user = await signUp(current);
    const admin = await signUp(current, { role: "admin" });
    const anonymous = await send(current, "/api/admin/security/summary");
    expect(anonymous.status).toBe(401);
    expect(((await anonymous.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
    const refused = await summary(current, user.accessToken);
    expect(refused.response.status).toBe(403);
    expect(refused.body.code).toBe("FORBIDDEN");
    expect((await summary(current, admin.accessToken)).response.status).toBe(200);
  });

  test("counts and orders the top addresses and principals of each kind of refusal", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PRIVACY: "1" } });
    const { victim, heavy } = await refusals(current);
    const admin = await signUp(current, { role: "admin", peer: "10.50.0.3" });
    const { response, body } = await summary(current, admin.accessToken);
    expect(response.status).toBe(200);

    expect(body.failedLogins.total).toBe(7);
    expect(body.failedLogins.addresses).toEqual([
      { address: "198.51.100.7", count: 3 },
      { address: "192.0.2.4", count: 2 },
      { address: "203.0.113.9", count: 2 },
    ]);
    // Unknown accounts have no principal; the real one was tried 4 times.
    expect(body.failedLogins.principals).toEqual([
      { principal: `user:${victim.userId}`, count: 4 },
    ]);

    // Audited once per key and minute (probe 89b F2): two refusals of one key in a minute are one.
    expect(body.rateLimitRefusals.total).toBe(2);
    // A tie, in address order (as text).
    expect(body.rateLimitRefusals.addresses).toEqual([
      { address: "10.50.0.2", count: 1 },
      { address: "198.51.100.200", count: 1 },
    ]);
    expect(body.rateLimitRefusals.principals).toEqual([
      { principal: `user:${heavy.userId}`, count: 1 },
    ]);

    expect(body.signatureFailures).toEqual({
      total: 3,
      addresses: [
        { address: "203.0.113.50", count: 2 },
        { address: "203.0.113.51", count: 1 },
      ],
      principals: [],
    });

    const top1 = await summary(current, admin.accessToken, "?limit=1");
    expect(top1.body.failedLogins.addresses).toEqual([{ address: "198.51.100.7", count: 3 }]);

    // A window of 4 days reaches the old failed login too.
    const wide = await summary(current, admin.accessToken, "?since=4d");
    expect(wide.body.failedLogins.total).toBe(8);
    expect(wide.body.failedLogins.addresses[0]).toEqual({ address: "198.51.100.7", count: 4 });

    const viewed = current.db.$client
      .query<{ actor: string }, []>(
        "SELECT actor FROM audit_events WHERE type = 'admin.security.summarized'",
      )
      .all();
    expect(viewed.map((row) => row.actor)).toEqual([
      `user:${admin.userId}`,
      `user:${admin.userId}`,
      `user:${admin.userId}`,
    ]);
  });

  test("rows written into the file, whatever they hold (a BLOB, a number), are left out of every count and said as tampered, by the route and the CLI (probes 86d F1, 58a F1)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    current.services.audit.record({
      type: "auth.login.failed",
      outcome: "failure",
      ip: "198.51.100.9",
    });
    current.services.audit.flush();
    const forge = (ip: string, actor: string) =>
      current!.db.$client.run(
        `INSERT INTO audit_events (at, type, actor, ip, route, request_id, outcome, detail, subject_salt, subject_commit, prev_hash, hash)
         VALUES (${Date.now()}, 'auth.login.failed', ${actor}, ${ip}, NULL, NULL, 'failure', '{}', NULL, 'c', 'p', 'h')`,
      );
    // Fifty failed logins framing one address, and values no Palisade row holds.
    for (let i = 0; i < 50; i++) forge("'203.0.113.5'", "NULL");
    forge("X'3139382E35312E3130302E39'", "X'757365723A3432'");
    forge("X'DEADBEEF'", "7");
    forge("3232235777", "NULL");
    const { response, body } = await summary(current, admin.accessToken);
    expect(response.status).toBe(200);
    expect(body.tampered).toBe(53);
    expect(body.failedLogins).toEqual({
      total: 1,
      addresses: [{ address: "198.51.100.9", count: 1 }],
      principals: [],
    });
    const json = await cliInProcess(["audit:top", "--json"], {
      DATABASE_PATH: current.databasePath,
    });
    expect(json.code).toBe(0);
    const printed = JSON.parse(json.stdout);
    expect({ tampered: printed.tampered, failedLogins: printed.failedLogins }).toEqual({
      tampered: 53,
      failedLogins: body.failedLogins,
    });
    const text = await cliInProcess(["audit:top"], { DATABASE_PATH: current.databasePath });
    expect(text.stdout).toContain("53 events left out: they do not match their hash");
    expect(text.stdout).toContain("1  198.51.100.9");
    expect(text.stdout).not.toContain("203.0.113.5");
  });

  test("a window longer than a part is read whole: every part counted, ranked across them", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const now = Date.now();
    for (let i = 0; i < SUMMARY_PART_ROWS * 2 + 10; i++) {
      current.services.audit.record({
        type: "ratelimit.rejected",
        outcome: "denied",
        ip: i % 3 === 0 ? "198.51.100.1" : `203.0.113.${i % 200}`,
        // Several rows at one time: the parts' order is (at, id), not the time alone.
        at: now - 60_000 + Math.floor(i / 7),
      });
    }
    current.services.audit.flush();
    const { body } = await summary(current, admin.accessToken, "?limit=1");
    expect(body.tampered).toBe(0);
    expect(body.rateLimitRefusals.total).toBe(SUMMARY_PART_ROWS * 2 + 10);
    expect(body.rateLimitRefusals.addresses).toEqual([
      { address: "198.51.100.1", count: Math.ceil((SUMMARY_PART_ROWS * 2 + 10) / 3) },
    ]);
  });

  test("since is a duration or an ISO date-time, bounded to 30 days back and not the future", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    current.services.audit.record({
      type: "auth.login.failed",
      outcome: "failure",
      ip: "198.51.100.1",
      at: Date.now() - 2 * 60 * 60 * 1000,
    });
    current.services.audit.flush();
    const at = (query: string) => summary(current!, admin.accessToken, query);

    expect((await at("?since=90m")).body.failedLogins.total).toBe(0);
    expect((await at("?since=3h")).body.failedLogins.total).toBe(1);
    const iso = new Date(Date.now() - 3 * 60 * 60 * 1000).toISOString();
    const byIso = await at(`?since=${encodeURIComponent(iso)}`);
    expect(byIso.response.status).toBe(200);
    expect(byIso.body.since).toBe(iso);
    expect(byIso.body.failedLogins.total).toBe(1);

    const future = new Date(Date.now() + 60 * 60 * 1000).toISOString();
    for (const bad of ["31d", "abc", "2026-01-01", "-5m", "0x10h", future]) {
      const { response, body } = await at(`?since=${encodeURIComponent(bad)}`);
      expect(response.status).toBe(422);
      expect(body.code).toBe("VALIDATION_FAILED");
      expect(JSON.stringify(body)).toContain("query/since");
    }
    for (const bad of ["0", "101", "1.5"]) {
      expect((await at(`?limit=${bad}`)).response.status).toBe(422);
    }
  });

  test("a date-time on a day that does not exist is refused, not read as the next month's", () => {
    const now = Date.parse("2026-12-05T00:00:00Z");
    expect(parseSince("2026-11-30T00:00:00Z", now)).toEqual({
      ok: true,
      at: Date.parse("2026-11-30T00:00:00Z"),
    });
    for (const unreal of ["2026-11-31T00:00:00Z", "2026-12-00T00:00:00Z"]) {
      expect(parseSince(unreal, now)).toEqual({
        ok: false,
        message: "Expected a duration (90m, 12h, 7d) or an ISO 8601 date-time with an offset",
      });
    }
  });
});

describe("bun run cli audit:top", () => {
  test("prints the same ranking as the route, as text and as JSON", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PRIVACY: "1" } });
    const { victim, heavy } = await refusals(current);
    const env = { DATABASE_PATH: current.databasePath };

    const json = await cliInProcess(["audit:top", "--json", "--limit", "2"], env);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.stdout) as Record<
      string,
      { total: number; addresses: { address: string; count: number }[] }
    >;
    // The API's shape, so a script reads either (probe 27c F5).
    expect(Object.keys(parsed)).toEqual([
      "since",
      "until",
      "tampered",
      "failedLogins",
      "rateLimitRefusals",
      "signatureFailures",
    ]);
    expect(parsed.failedLogins!.total).toBe(7);
    expect(parsed.failedLogins!.addresses).toEqual([
      { address: "198.51.100.7", count: 3 },
      { address: "192.0.2.4", count: 2 },
    ]);
    expect(parsed.signatureFailures!.total).toBe(3);

    const text = await cliInProcess(["audit:top"], env);
    expect(text.code).toBe(0);
    const lines = text.stdout.split("\n");
    const section = (title: string) => lines.slice(lines.indexOf(title));
    expect(lines).toContain("failed logins: 7");
    expect(
      section("failed logins: 7")
        .slice(1, 5)
        .map((line) => line.trim()),
    ).toEqual(["by address", "3  198.51.100.7", "2  192.0.2.4", "2  203.0.113.9"]);
    expect(text.stdout).toContain(`4  user:${victim.userId}`);
    expect(text.stdout).toContain(`1  user:${heavy.userId}`);
    expect(lines).toContain("rate-limit refusals: 2");
    expect(lines).toContain("webhook signature failures: 3");
  });

  test("bad --since or --limit is one line and exit 2", async () => {
    current = buildTestApp();
    const env = { DATABASE_PATH: current.databasePath };
    for (const args of [
      ["--since", "40d"],
      ["--since", "yesterday"],
      ["--since"],
      ["--limit", "0"],
      ["--limit", "many"],
    ]) {
      const result = await cliInProcess(["audit:top", ...args], env);
      expect(result.code).toBe(2);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
    }
  });
});
