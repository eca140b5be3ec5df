import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../support/app";
import { bearer, createKey, signUp } from "../support/auth";
import { untoldInstance } from "../support/instance";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

describe("audit log query", () => {
  test("filters by type, actor, address and time, newest first, with a cursor", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const { audit } = current.services;
    for (let i = 0; i < 7; i++) {
      audit.record({
        type: i % 2 ? "csrf.failed" : "ratelimit.rejected",
        outcome: "denied",
        actor: i < 3 ? "user:someone" : null,
        ip: `192.0.2.${i}`,
        at: Date.parse("2026-01-01T00:00:00Z") + i * 60_000,
      });
    }
    audit.flush();
    const get = async (query: string) => {
      const response = await send(current!, `/api/admin/audit?${query}`, {
        headers: bearer(admin.accessToken),
      });
      expect(response.status).toBe(200);
      return (await response.json()) as {
        events: { id: number; type: string; ip: string; at: string }[];
        nextCursor: number | null;
      };
    };
    const csrf = await get("type=csrf.failed");
    expect(csrf.events.map((e) => e.ip)).toEqual(["192.0.2.5", "192.0.2.3", "192.0.2.1"]);
    expect((await get("actor=user:someone&type=ratelimit.rejected")).events).toHaveLength(2);
    expect((await get("ip=192.0.2.4")).events.map((e) => e.type)).toEqual(["ratelimit.rejected"]);
    const window = await get(
      `since=${encodeURIComponent("2026-01-01T00:02:00Z")}&until=${encodeURIComponent("2026-01-01T00:04:00Z")}&type=ratelimit.rejected`,
    );
    expect(window.events.map((e) => e.ip)).toEqual(["192.0.2.4", "192.0.2.2"]);

    const first = await get("limit=3&ip=192.0.2.6");
    expect(first.events).toHaveLength(1);
    const page1 = await get("limit=3&type=ratelimit.rejected");
    expect(page1.events).toHaveLength(3);
    expect(page1.nextCursor).toBe(page1.events[2]!.id);
    const page2 = await get(`limit=3&type=ratelimit.rejected&cursor=${page1.nextCursor}`);
    expect(page2.events).toHaveLength(1);
    expect(page2.nextCursor).toBeNull();
    expect(page2.events[0]!.id).toBeLessThan(page1.events[2]!.id);
  });

  test("since and until on a day that does not exist are 422, not the next month's days", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const get = (query: string) =>
      send(current!, `/api/admin/audit?${query}`, { headers: bearer(admin.accessToken) });
    for (const [name, value] of [
      ["since", "2026-02-30T00:00:00Z"],
      ["until", "2026-11-31T23:00:00Z"],
    ] as const) {
      const response = await get(`${name}=${encodeURIComponent(value)}`);
      expect(response.status).toBe(422);
      expect(JSON.stringify(await response.json())).toContain(`query/${name}`);
    }
    expect((await get(`since=${encodeURIComponent("2026-02-28T00:00:00Z")}`)).status).toBe(200);
  });

  test("a whole-number query parameter must be written in digits: every other spelling is 422", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" } });
    const admin = await signUp(current, { role: "admin" });
    const get = (query: string, headers = bearer(admin.accessToken)) =>
      send(current!, `/api/admin/audit?${query}`, { headers });
    for (const spelling of ["0x10", "0b11", "1e2", "%2B5", "5.0", "%2010", "10%20", "0o7", ""]) {
      for (const name of ["limit", "cursor"]) {
        const response = await get(`${name}=${spelling}`);
        expect({ spelling, name, status: response.status }).toEqual({
          spelling,
          name,
          status: 422,
        });
        expect(JSON.stringify(await response.json())).toContain(`query/${name}`);
      }
    }
    expect((await get("limit=16&cursor=999")).status).toBe(200);
    // Once each: with two, the route reads one and a filter in front may read the other.
    expect((await get("limit=5&limit=6")).status).toBe(422);
    expect((await get("limit=016")).status).toBe(200);
    // Anonymous is 401 first, whatever the query; a user is 403.
    expect((await get("limit=0x10", {})).status).toBe(401);
    // The other routes with whole-number parameters are held to it too.
    const user = await signUp(current);
    for (const path of ["/api/chat/conversations?limit=0x10", "/api/payments?limit=1e1"]) {
      const response = await send(current, path, { headers: bearer(user.accessToken) });
      expect({ path, status: response.status }).toEqual({ path, status: 422 });
    }
  });

  test("every query parameter a route declares is sent at most once: twice is 422 naming it", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" } });
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const today = new Date().toISOString().slice(0, 10);
    // Two values each route takes alone (so only the repetition is wrong).
    const cases: [string, string, string, string][] = [
      ["/api/admin/audit", "type", "auth.login", "auth.logout"],
      ["/api/admin/audit", "actor", "user:a", "user:b"],
      ["/api/admin/audit", "ip", "192.0.2.1", "192.0.2.2"],
      ["/api/admin/audit", "since", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
      ["/api/admin/security/summary", "since", "24h", "12h"],
      ["/api/admin/usage", "day", today, "2020-01-01"],
      ["/api/admin/usage", "principal", "user:a", "user:b"],
      ["/api/chat/conversations", "limit", "5", "6"],
      ["/api/admin/audit", "cursor", "5", "6"],
    ];
    for (const [path, name, first, second] of cases) {
      const q = (value: string) => `${name}=${encodeURIComponent(value)}`;
      const alone = await send(current, `${path}?${q(first)}`, { headers });
      expect({ path, name, status: alone.status }).toEqual({ path, name, status: 200 });
      const twice = await send(current, `${path}?${q(first)}&${q(second)}`, { headers });
      expect({ path, name, status: twice.status }).toEqual({ path, name, status: 422 });
      expect(JSON.stringify(await twice.json())).toContain(`query/${name}`);
      // The same value twice too: the rule is about the spelling, not about a conflict.
      const same = await send(current, `${path}?${q(first)}&${q(first)}`, { headers });
      expect({ path, name, status: same.status }).toEqual({ path, name, status: 422 });
    }
    // Login's mode, before any credential is looked at.
    const login = await send(current, "/api/auth/login?mode=token&mode=cookie", {
      body: { email: "nobody@example.test", password: "x".repeat(12) },
    });
    expect(login.status).toBe(422);
  });

  test("a page is at most 500 and the query is itself audited", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const tooMany = await send(current, "/api/admin/audit?limit=501", {
      headers: bearer(admin.accessToken),
    });
    expect(tooMany.status).toBe(422);
    await send(current, "/api/admin/audit?limit=5", { headers: bearer(admin.accessToken) });
    const row = current.db.$client
      .query("SELECT actor FROM audit_events WHERE type = 'admin.audit.queried'")
      .get() as { actor: string };
    expect(row.actor).toBe(`user:${admin.userId}`);
  });
});

describe("IP blocks", () => {
  test("add with TTL and reason, list, remove; each action audited with the admin", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const added = await send(current, "/api/admin/blocks", {
      headers,
      body: { address: "2001:db8:5:6::99", ttlMinutes: 30, reason: "credential stuffing" },
    });
    expect(added.status).toBe(201);
    const block = (await added.json()) as {
      id: number;
      address: string;
      expiresAt: number;
      createdAt: number;
    };
    expect(block.address).toBe("2001:db8:5:6::/64");
    expect(block.expiresAt - block.createdAt).toBe(30 * 60_000);
    expect((await send(current, "/openapi.json", { peer: "2001:db8:5:6::1" })).status).toBe(403);

    const list = (await (await send(current, "/api/admin/blocks", { headers })).json()) as {
      blocks: { id: number; reason: string; createdBy: string }[];
    };
    expect(list.blocks).toEqual([
      expect.objectContaining({
        id: block.id,
        reason: "credential stuffing",
        createdBy: `user:${admin.userId}`,
      }),
    ]);
    const removed = await send(current, `/api/admin/blocks/${block.id}`, {
      method: "DELETE",
      headers,
    });
    expect(removed.status).toBe(204);
    expect((await send(current, "/openapi.json", { peer: "2001:db8:5:6::1" })).status).toBe(200);
    const events = current.db.$client
      .query("SELECT type, actor FROM audit_events WHERE type LIKE 'ip.%' ORDER BY id")
      .all();
    expect(events).toEqual([
      { type: "ip.blocked", actor: `user:${admin.userId}` },
      { type: "ip.unblocked", actor: `user:${admin.userId}` },
    ]);
    expect(
      (await send(current, `/api/admin/blocks/${block.id}`, { method: "DELETE", headers })).status,
    ).toBe(404);
  });

  test("a block covering the admin's own address is 409 and blocks nothing; the CLI may add it", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin", peer: "2001:db8:7:8::5" });
    const headers = bearer(admin.accessToken);
    // The same address, and another in the admin's /64: either would lock the admin out.
    for (const address of ["2001:db8:7:8::5", "2001:db8:7:8::99"]) {
      const refused = await send(current, "/api/admin/blocks", {
        headers,
        peer: "2001:db8:7:8::5",
        body: { address, ttlMinutes: 5, reason: "oops" },
      });
      expect(refused.status).toBe(409);
      expect(((await refused.json()) as { code: string }).code).toBe("CONFLICT");
    }
    expect(current.services.ipBlocks.listActive()).toEqual([]);
    const listed = await send(current, "/api/admin/blocks", { headers, peer: "2001:db8:7:8::5" });
    expect(listed.status).toBe(200);
    // Another address from the same admin is blocked as before.
    const other = await send(current, "/api/admin/blocks", {
      headers,
      peer: "2001:db8:7:8::5",
      body: { address: "192.0.2.9", ttlMinutes: 5, reason: "abuse" },
    });
    expect(other.status).toBe(201);
  });

  test("a bad address is 422", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const response = await send(current, "/api/admin/blocks", {
      headers: bearer(admin.accessToken),
      body: { address: "not-an-ip", ttlMinutes: 5, reason: "x" },
    });
    expect(response.status).toBe(422);
  });
});

describe("a credential revoked in the second before this process reads the revocation", () => {
  test("a revoked admin key, a logged-out admin session or a demoted admin's key changes nothing here: no key made, rotated or revoked, no block lifted", async () => {
    current = buildTestApp();
    const target = current;
    const admin = await signUp(target, { role: "admin" });
    const { key, record } = createKey(target, ["admin"], admin.userId);
    const victim = createKey(target, ["chat"], admin.userId);
    const block = target.services.ipBlocks.block({
      address: "198.51.100.40",
      reason: "spam",
      ttlMs: 3_600_000,
      source: "admin",
    });
    const other = untoldInstance(target);
    try {
      const asKey = { "x-api-key": key };
      const asToken = bearer(admin.accessToken);
      for (const headers of [asKey, asToken]) {
        expect((await send(other, "/api/admin/api-keys", { headers })).status).toBe(200);
      }
      expect(
        (
          await send(target, `/api/admin/api-keys/${record.id}`, {
            method: "DELETE",
            headers: asToken,
          })
        ).status,
      ).toBe(204);
      const loggedOut = await send(target, "/api/auth/logout", {
        headers: asToken,
        body: { refreshToken: admin.refreshToken },
      });
      expect(loggedOut.status).toBeLessThan(300);
      const keysBefore = target.db.$client.query("SELECT count(*) AS n FROM api_keys").get();

      for (const headers of [asKey, asToken]) {
        const changes = [
          send(other, "/api/admin/api-keys", {
            headers,
            body: { name: "persistence", scopes: ["admin"] },
          }),
          send(other, `/api/admin/api-keys/${victim.record.id}/rotate`, { headers, body: {} }),
          send(other, `/api/admin/api-keys/${victim.record.id}`, { method: "DELETE", headers }),
          send(other, `/api/admin/blocks/${block.id}`, { method: "DELETE", headers }),
          send(other, "/api/admin/blocks", {
            headers,
            body: { address: "198.51.100.41", ttlMinutes: 60, reason: "spam" },
          }),
        ];
        for (const answer of await Promise.all(changes)) {
          expect(answer.status).toBe(401);
          expect(((await answer.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
        }
      }
      // An admin demoted meanwhile: the key is narrowed to a user's scopes (chat), not revoked.
      const demoted = await signUp(target, { role: "admin" });
      const demotedKey = createKey(target, ["admin", "chat"], demoted.userId).key;
      const viaDemoted = { "x-api-key": demotedKey };
      expect((await send(other, "/api/admin/api-keys", { headers: viaDemoted })).status).toBe(200);
      target.services.auth.setRole(demoted.userId, "user", "test");
      const lifted = await send(other, `/api/admin/blocks/${block.id}`, {
        method: "DELETE",
        headers: viaDemoted,
      });
      expect(lifted.status).toBe(401);
      expect(target.db.$client.query("SELECT count(*) AS n FROM api_keys").get()).toEqual({
        n: (keysBefore as { n: number }).n + 1,
      });
      expect(target.services.apiKeys.isActive(victim.record.id)).toBe(true);
      expect(target.services.ipBlocks.listActive().map((b) => b.address)).toEqual([
        "198.51.100.40",
      ]);
    } finally {
      other.close();
    }
  });
});
