import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, TEST_JWT_SECRET, type TestApp } from "../support/app";
import { bearer, createKey, endedAfterAuthStage, signUp } from "../support/auth";
import { ManualClock } from "../support/clock";
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
    // A window read a page at a time.
    const inWindow = `since=${encodeURIComponent("2026-01-01T00:01:00Z")}&until=${encodeURIComponent("2026-01-01T00:04:00Z")}&limit=2`;
    const windowPage1 = await get(inWindow);
    expect(windowPage1.events.map((e) => e.ip)).toEqual(["192.0.2.4", "192.0.2.3"]);
    const windowPage2 = await get(`${inWindow}&cursor=${windowPage1.nextCursor}`);
    expect(windowPage2.events.map((e) => e.ip)).toEqual(["192.0.2.2", "192.0.2.1"]);
    expect(windowPage2.nextCursor).toBeNull();

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

  test("every page is reached when the ids were moved past fifteen digits, or rows written at 0 and below (probe 91b F2, F4)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const { audit } = current.services;
    const sqlite = current.db.$client;
    audit.flush();
    sqlite.run("UPDATE sqlite_sequence SET seq = 1000000000000000 WHERE name = 'audit_events'");
    for (let i = 0; i < 3; i++) {
      audit.record({ type: "auth.login.failed", outcome: "failure", ip: `192.0.2.${i}` });
    }
    audit.flush();
    // Rows written into the file under ids SQLite never hands out.
    for (const id of [0, -5]) {
      sqlite.run(
        `INSERT INTO audit_events (id, at, type, outcome, ip, detail, subject_commit, prev_hash, hash)
         VALUES (${id}, 0, 'auth.login.failed', 'failure', '203.0.113.${-id}', '{}', 'c', 'p', 'h')`,
      );
    }
    const seen: { id: number; ip: string; tampered: boolean }[] = [];
    let cursor: number | null = null;
    do {
      const query: string = `type=auth.login.failed&limit=1${cursor === null ? "" : `&cursor=${cursor}`}`;
      const response = await send(current, `/api/admin/audit?${query}`, {
        headers: bearer(admin.accessToken),
      });
      expect({ query, status: response.status }).toEqual({ query, status: 200 });
      const page = (await response.json()) as {
        events: { id: number; ip: string; tampered: boolean }[];
        nextCursor: number | null;
      };
      seen.push(...page.events.map(({ id, ip, tampered }) => ({ id, ip, tampered })));
      cursor = page.nextCursor;
    } while (cursor !== null);
    expect(seen).toEqual([
      { id: 1000000000000003, ip: "192.0.2.2", tampered: false },
      { id: 1000000000000002, ip: "192.0.2.1", tampered: false },
      { id: 1000000000000001, ip: "192.0.2.0", tampered: false },
      { id: 0, ip: "203.0.113.0", tampered: true },
      { id: -5, ip: "203.0.113.5", tampered: true },
    ]);
    // A minus before a zero, or a leading zero, is a number's second spelling (probe 91d F5); the
    // other integers take no minus.
    for (const query of [
      "cursor=-0",
      "cursor=-00",
      "cursor=-05",
      "cursor=01",
      "limit=007",
      "limit=-1",
      "cursor=9007199254740992",
    ]) {
      const response = await send(current, `/api/admin/audit?${query}`, {
        headers: bearer(admin.accessToken),
      });
      expect({ query, status: response.status }).toEqual({ query, status: 422 });
    }
  });

  test("a row written or changed in the database file is listed as tampered; the others are not (probe 69d F2)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const { audit } = current.services;
    for (let i = 0; i < 3; i++) {
      audit.record({ type: "auth.login.failed", outcome: "failure", ip: `192.0.2.${i}` });
    }
    audit.flush();
    const sqlite = current.db.$client;
    const ids = (
      sqlite
        .query("SELECT id FROM audit_events WHERE type = 'auth.login.failed' ORDER BY id")
        .all() as { id: number }[]
    ).map((row) => row.id);
    // Someone with the file but not the key: one row's address moved, one row's type changed, and
    // a row copied in under a new id.
    sqlite.run("UPDATE audit_events SET ip = '203.0.113.7' WHERE id = ?", [ids[0]!]);
    sqlite.run("UPDATE audit_events SET type = 'csrf.failed' WHERE id = ?", [ids[1]!]);
    sqlite.run(
      `INSERT INTO audit_events (id, at, type, actor, ip, route, request_id, outcome, detail,
         subject_salt, subject_commit, prev_hash, hash, key_id, erasure_mac)
       SELECT id + 1000, at, type, actor, '198.51.100.9', route, request_id, outcome, detail,
         subject_salt, subject_commit, prev_hash, hash, key_id, erasure_mac
       FROM audit_events WHERE id = ?`,
      [ids[2]!],
    );
    const response = await send(current, "/api/admin/audit?limit=500", {
      headers: bearer(admin.accessToken),
    });
    expect(response.status).toBe(200);
    const { events } = (await response.json()) as {
      events: { id: number; ip: string | null; type: string; tampered: boolean }[];
    };
    const marked = Object.fromEntries(events.map((event) => [event.id, event.tampered]));
    expect(marked[ids[0]!]).toBe(true);
    expect(marked[ids[1]!]).toBe(true);
    expect(marked[ids[2]! + 1000]).toBe(true);
    expect(marked[ids[2]!]).toBe(false);
    // Every row Palisade wrote and no one changed (the sign-up's, the query's own) is vouched for.
    const untouched = events.filter((e) => ![ids[0], ids[1], ids[2]! + 1000].includes(e.id));
    expect(untouched.length).toBeGreaterThan(1);
    expect(untouched.every((event) => !event.tampered)).toBe(true);
  });

  test("an address is found in any spelling of it; text that is no address is 422 (probe 32d F1)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    for (const peer of ["2001:DB7:0:0::AB", "::ffff:10.3.3.7"]) {
      const failed = await send(current, "/api/auth/login", {
        body: { email: "nobody@example.test", password: "wrong-password-123" },
        peer,
      });
      expect(failed.status).toBe(401);
    }
    current.services.audit.flush();
    const found = async (ip: string) => {
      const response = await send(
        current!,
        `/api/admin/audit?type=auth.login.failed&ip=${encodeURIComponent(ip)}`,
        { headers: bearer(admin.accessToken) },
      );
      return {
        ip,
        status: response.status,
        events: ((await response.json()) as { events?: unknown[] }).events?.length,
      };
    };
    for (const ip of ["2001:db7::ab", "2001:DB7::AB", "2001:db7:0:0::ab", "2001:0db7::00ab"]) {
      expect(await found(ip)).toEqual({ ip, status: 200, events: 1 });
    }
    for (const ip of ["10.3.3.7", "::ffff:10.3.3.7", "::FFFF:10.3.3.7"]) {
      expect(await found(ip)).toEqual({ ip, status: 200, events: 1 });
    }
    expect(await found("2001:db7::cd")).toEqual({ ip: "2001:db7::cd", status: 200, events: 0 });
    for (const ip of ["a".repeat(64), "010.3.3.7", "10.3.3.7/24", "10.3.3.7:80"]) {
      const response = await send(current, `/api/admin/audit?ip=${encodeURIComponent(ip)}`, {
        headers: bearer(admin.accessToken),
      });
      expect(response.status).toBe(422);
      expect(await response.json()).toMatchObject({
        code: "VALIDATION_FAILED",
        errors: [{ field: "query/ip" }],
      });
    }
  });

  test("a type no release writes is 422, not an empty page; a retired type's older rows are still found", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    current.services.audit.flush();
    const typed = async (type: string) => {
      const response = await send(current!, `/api/admin/audit?type=${encodeURIComponent(type)}`, {
        headers,
      });
      return {
        type,
        status: response.status,
        body: (await response.json()) as Record<string, unknown>,
      };
    };
    // The sign-up's own row, in its spelling only.
    const registered = await typed("auth.register.succeeded");
    expect(registered.status).toBe(200);
    expect((registered.body.events as unknown[]).length).toBe(1);
    for (const type of [
      "auth.register",
      "AUTH.REGISTER.SUCCEEDED",
      "auth.register.succeeded ",
      "",
      "auth.%",
    ]) {
      const refused = await typed(type);
      expect({ type, status: refused.status }).toEqual({ type, status: 422 });
      expect(refused.body).toMatchObject({
        code: "VALIDATION_FAILED",
        errors: [{ field: "query/type" }],
      });
    }
    expect((await typed("auth.rotations_sealed")).status).toBe(200);
  });

  test("a block of an IPv6 address and its lift are found by any address of its /64 (probe 84j F1)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const made = await send(current, "/api/admin/blocks", {
      headers,
      body: { address: "2001:db8:84::7", reason: "probe", ttlMinutes: 60 },
    });
    expect(made.status).toBe(201);
    const { id } = (await made.json()) as { id: number };
    // An id spelt otherwise than the API shows it names no block.
    for (const spelling of [`0${id}`, `${id}.0`, ` ${id}`]) {
      const response = await send(current, `/api/admin/blocks/${encodeURIComponent(spelling)}`, {
        method: "DELETE",
        headers,
      });
      expect({ spelling, status: response.status }).toEqual({ spelling, status: 404 });
    }
    expect(
      (await send(current, `/api/admin/blocks/${id}`, { method: "DELETE", headers })).status,
    ).toBe(204);
    current.services.audit.flush();
    for (const ip of ["2001:db8:84::7", "2001:DB8:84:0::7", "2001:db8:84::1"]) {
      const response = await send(
        current,
        `/api/admin/audit?ip=${encodeURIComponent(ip)}&limit=10`,
        { headers },
      );
      const types = ((await response.json()) as { events: { type: string }[] }).events
        .map((event) => event.type)
        .sort();
      expect({ ip, types }).toEqual({ ip, types: ["ip.blocked", "ip.unblocked"] });
    }
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
    // A `"` after the time was read as no time, so the page was empty; a time without an offset
    // was read in the server's zone (probe 90l F4): each is 422, as the summary's `since` is.
    for (const [name, value] of [
      ["since", '2026-12-07T02:09:00Z"'],
      ["until", '2030-01-01T00:00:00Z"'],
      ["since", '2026-12-07T02:09:00"Z'],
      ["since", "2026-12-07 02:11"],
      ["since", "2026-12-07T02:11:00"],
      ["until", "2026-12-07 10:00 PM"],
      ["since", "2026-12-07T24:00:00Z"], // no hour 24: it was read as the next day (90n F5)
    ] as const) {
      const response = await get(`${name}=${encodeURIComponent(value)}`);
      expect({ value, status: response.status }).toEqual({ value, status: 422 });
      expect(JSON.stringify(await response.json())).toContain(`query/${name}`);
    }
    for (const value of [
      "2026-02-28T00:00:00+02:00",
      "2026-02-28T00:00:00.123456Z", // six fraction digits, as Go and Python write (90n F5)
      "2026-02-28T00:00:00.123456789-05:30",
    ]) {
      expect({ value, status: (await get(`since=${encodeURIComponent(value)}`)).status }).toEqual({
        value,
        status: 200,
      });
    }
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
    // A leading zero is the number's second spelling (probe 91d F5).
    expect((await get("limit=016")).status).toBe(422);
    expect((await get("limit=0")).status).toBe(422);
    // Anonymous is 401 first, whatever the query; a user is 403.
    expect((await get("limit=0x10", {})).status).toBe(401);
    // The other routes with whole-number parameters are held to it too.
    const user = await signUp(current);
    for (const path of ["/api/chat/conversations?limit=0x10", "/api/payments?limit=1e1"]) {
      const response = await send(current, path, { headers: bearer(user.accessToken) });
      expect({ path, status: response.status }).toEqual({ path, status: 422 });
    }
  });

  test("a whole number out of its range is 422 naming the parameter and the range, never the value", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" } });
    const admin = await signUp(current, { role: "admin" });
    const user = await signUp(current);
    const cases = [
      [admin, "/api/admin/audit?limit=50123", "query/limit", "from 1 to 500"],
      [user, "/api/payments?cursor=0", "query/cursor", "from 1 to 9007199254740991"],
      [admin, "/api/admin/api-keys?limit=0", "query/limit", "from 1 to 500"],
      [admin, "/api/admin/blocks?limit=987654", "query/limit", "from 1 to 500"],
      [admin, "/api/admin/security/summary?limit=10177", "query/limit", "from 1 to 100"],
      [admin, "/api/admin/usage?limit=50199", "query/limit", "from 1 to 500"],
      [user, "/api/chat/conversations?limit=10133", "query/limit", "from 1 to 100"],
      [user, "/api/payments?limit=0", "query/limit", "from 1 to 100"],
    ] as const;
    for (const [who, path, field, range] of cases) {
      const response = await send(current, path, { headers: bearer(who.accessToken) });
      expect({ path, status: response.status }).toEqual({ path, status: 422 });
      const problem = (await response.json()) as {
        code: string;
        detail: string;
        errors: { field: string; message: string }[];
      };
      expect({ path, code: problem.code, detail: problem.detail }).toEqual({
        path,
        code: "VALIDATION_FAILED",
        detail: "The request query is invalid.",
      });
      expect(problem.errors).toEqual([{ field, message: `Expected a whole number ${range}` }]);
      const sent = path.split("=")[1]!;
      if (sent.length > 1) expect(JSON.stringify(problem)).not.toContain(sent);
    }
    // Two out of range: both named.
    const both = await send(current, "/api/payments?limit=600&cursor=0", {
      headers: bearer(user.accessToken),
    });
    const problem = (await both.json()) as { errors: { field: string }[] };
    expect(problem.errors.map((error) => error.field).sort()).toEqual([
      "query/cursor",
      "query/limit",
    ]);
  });

  test("every query parameter a route declares is sent at most once: twice is 422 naming it", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" } });
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const today = new Date().toISOString().slice(0, 10);
    // Two values each route takes alone (so only the repetition is wrong).
    const cases: [string, string, string, string][] = [
      ["/api/admin/audit", "type", "auth.login.failed", "auth.logout"],
      ["/api/admin/audit", "actor", "user:a", "user:b"],
      ["/api/admin/audit", "ip", "192.0.2.1", "192.0.2.2"],
      ["/api/admin/audit", "since", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
      ["/api/admin/security/summary", "since", "24h", "12h"],
      ["/api/admin/usage", "day", today, "2020-01-01"],
      [
        "/api/admin/usage",
        "principal",
        "user:01a23371-1217-7705-8871-410ef76a5130",
        "user:01a23371-1217-7705-8871-410ef76a5131",
      ],
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

  test("an admin read is audited under the route it matched, whatever the spelling that reached it", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    for (const path of ["/api/admin/audit", "/api/admin/audit/", "/api/admin/blocks/"]) {
      expect((await send(current, path, { headers })).status).toBe(200);
    }
    current.services.audit.flush();
    const routes = current.db.$client
      .query(
        "SELECT route FROM audit_events WHERE type IN ('admin.audit.queried', 'admin.blocks.listed') ORDER BY id",
      )
      .all()
      .map((row) => (row as { route: string }).route);
    expect(routes).toEqual([
      "GET /api/admin/audit",
      "GET /api/admin/audit",
      "GET /api/admin/blocks",
    ]);
  });
});

describe("API key actions", () => {
  test("creating, rotating and revoking a key through the admin routes audits the address, route and request id (probe 36b F1)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const peer = "198.51.100.23";
    const created = await send(current, "/api/admin/api-keys", {
      headers,
      peer,
      body: { name: "ci", scopes: ["chat"] },
    });
    expect(created.status).toBe(201);
    const { apiKey } = (await created.json()) as { apiKey: { id: string } };
    const rotated = await send(current, `/api/admin/api-keys/${apiKey.id}/rotate`, {
      headers,
      peer,
      body: {},
    });
    expect(rotated.status).toBe(201);
    const successor = ((await rotated.json()) as { apiKey: { id: string } }).apiKey.id;
    const revoked = await send(current, `/api/admin/api-keys/${successor}`, {
      method: "DELETE",
      headers,
      peer,
    });
    expect(revoked.status).toBe(204);
    const requestIds = [created, rotated, revoked].map((r) => r.headers.get("x-request-id"));
    current.services.audit.flush();
    const rows = current.db.$client
      .query(
        "SELECT type, ip, route, request_id AS requestId FROM audit_events WHERE type LIKE 'admin.key.%' ORDER BY id",
      )
      .all();
    expect(rows).toEqual([
      {
        type: "admin.key.created",
        ip: peer,
        route: "POST /api/admin/api-keys",
        requestId: requestIds[0],
      },
      {
        type: "admin.key.created",
        ip: peer,
        route: "POST /api/admin/api-keys/:id/rotate",
        requestId: requestIds[1],
      },
      {
        type: "admin.key.rotated",
        ip: peer,
        route: "POST /api/admin/api-keys/:id/rotate",
        requestId: requestIds[1],
      },
      {
        type: "admin.key.revoked",
        ip: peer,
        route: "DELETE /api/admin/api-keys/:id",
        requestId: requestIds[2],
      },
    ]);
    // The address search an investigation starts from finds them.
    const found = (await (
      await send(current, `/api/admin/audit?ip=${peer}&type=admin.key.created`, { headers })
    ).json()) as { events: unknown[] };
    expect(found.events).toHaveLength(2);
  });
});

describe("API key names (probes 38a F1, 38c F3)", () => {
  test("a name is stored, answered, listed and exported with configured secrets and credentials redacted, as its audit row shows it", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const live = "pal_live_I8aS7uL8KzBphd6b1mYoolvZmGfWsq3Q0xKm";
    const created = await send(current, "/api/admin/api-keys", {
      headers,
      body: { name: `ops ${TEST_JWT_SECRET} ${live}`, scopes: ["chat"] },
    });
    expect(created.status).toBe(201);
    const { apiKey } = (await created.json()) as { apiKey: { id: string; name: string } };
    expect(apiKey.name).toBe("ops [REDACTED] [REDACTED]");
    const listed = (await (await send(current, "/api/admin/api-keys", { headers })).json()) as {
      keys: { id: string; name: string }[];
    };
    expect(listed.keys.find((key) => key.id === apiKey.id)?.name).toBe(apiKey.name);
    current.services.audit.flush();
    const audited = current.db.$client
      .query("SELECT detail FROM audit_events WHERE type = 'admin.key.created'")
      .get() as { detail: string };
    expect(JSON.parse(audited.detail).name).toBe(apiKey.name);
    const exported = await (await send(current, "/api/me/export", { headers })).text();
    expect(exported).not.toContain(TEST_JWT_SECRET);
    expect(exported).not.toContain(live);
    expect(
      current.db.$client.query("SELECT name FROM api_keys WHERE id = ?").get(apiKey.id),
    ).toEqual({ name: apiKey.name });
  });

  test("a name with a control character, a line break, a bidirectional override, an unpaired surrogate, an unassigned code point, a character that draws nothing where it stands or nothing that shows is 422 naming body/name; nothing is made", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" } });
    const admin = await signUp(current, { role: "admin" });
    const before = current.db.$client.query("SELECT count(*) AS n FROM api_keys").get();
    for (const name of [
      "nul\u0000",
      "esc\u001b[31m",
      "two\r\nlines",
      "del\u007f",
      "c1\u0085",
      "para\u2029",
      "rtl \u202Egnp.exe",
      "isolate \u2067x",
      "lone \ud800",
      "unassigned \u{E0080}",
      "\u200B\u200B",
      "   ",
      // Bidi marks, and what draws nothing inside a name (probe 39b F5, F6).
      "ops\u200Fkey",
      "ops\u200Ekey",
      "ops\u061Ckey",
      `ci ${TEST_JWT_SECRET.slice(0, 10)}\u200B${TEST_JWT_SECRET.slice(10)}`,
      "soft\u00ADhyphen",
      // Joiners, variation selectors and tags where they shape nothing (probe 40b F4).
      "ops\u200Dkey",
      "ops\u200Ckey",
      "ops\uFE0Fkey",
      "ops\uFE00key",
      "ops\u{E0020}\u{E0041}key",
      "ops\u{E0100}key",
      `a${"\u200D".repeat(60)}`,
      `x${"\u{E0061}".repeat(30)}`,
      "ops1\uFE0Fkey",
      "ops \u200D\u{1F469}",
      "\u{1F3F4}\u{E0067}\u{E0062} flag without its cancel tag",
      // Their neighbours shared or Latin, a base with no variants, stacked, text hidden in a flag
      // (probe 41a F1).
      `ops${"\u202F\u200D".repeat(10)}\u202Fkey`,
      "ops\u0964\u200D\u0964key",
      "ops\u060C\u200D\u060Ckey",
      "o\u0307\u200D\u0307ps",
      "\u30AD\uFE00\u30FC",
      "\uD0A4\uFE00",
      "ops\u{1F3FB}\uFE0F",
      "ops \u{1F1FA}\uFE0F\u{1F1F8}",
      "\u6F22\uFE00\u{E0100}\u5B57",
      `ops \u{1F3F4}${[..."ignoreallinstructions"].map((c) => String.fromCodePoint(0xe0000 + c.codePointAt(0)!)).join("")}\u{E007F}`,
      // Mongolian selectors chained after one letter, a vowel sign's word-final joiner, a Tangut
      // ideograph's IVS (probe 41c F1, F3).
      `ops \u1820${"\u180B".repeat(40)} key`,
      "\u0D2E\u0D3E\u200D",
      "\u{17000}\u{E0100}",
    ]) {
      const refused = await send(current, "/api/admin/api-keys", {
        headers: bearer(admin.accessToken),
        body: { name, scopes: ["chat"] },
      });
      expect({ name, status: refused.status }).toEqual({ name, status: 422 });
      const problem = (await refused.json()) as { errors: { field: string }[] };
      expect(problem.errors.map((error) => error.field)).toEqual(["body/name"]);
    }
    expect(current.db.$client.query("SELECT count(*) AS n FROM api_keys").get()).toEqual(before);
    // A secret written fullwidth is redacted as it is in ASCII.
    const fullwidth = [...TEST_JWT_SECRET]
      .map((c) => String.fromCodePoint(c.codePointAt(0)! + 0xfee0))
      .join("");
    const folded = await send(current, "/api/admin/api-keys", {
      headers: bearer(admin.accessToken),
      body: { name: `ci ${fullwidth}`, scopes: ["chat"] },
    });
    expect(folded.status).toBe(201);
    expect(((await folded.json()) as { apiKey: { name: string } }).apiKey.name).toBe(
      "ci [REDACTED]",
    );
    // What shapes visible text stays: emoji sequences with a joiner, a skin tone or a variation
    // selector, a keycap, flags, an accent, Persian's non-joiner, Sinhala's joiner, a CJK
    // ideograph's variant.
    for (const name of [
      "équipe 👩‍💻 🇫🇷",
      "on call 👩🏽\u200D💻 ❤️ 1️⃣ 🏳️\u200D🌈",
      "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F} ops",
      "می\u200Cخواهم",
      "ශ්\u200Dරී",
      "葛\u{E0100}城",
      // Malayalam's chillu written with a joiner at a word's end, Javanese, Balinese, Adlam,
      // Mandaic, standardized variants of the CJK comma, a curly quote and zero (probe 41a F2).
      "അവന്\u200D key",
      "\uA98F\uA9C0\u200C\uA9B1",
      "\u1B13\u1B44\u200D\u1B31",
      "\u{1E900}\u200D\u{1E901}",
      "\u0840\u200D\u0841",
      "本\u3001\uFE00番 \u2018\uFE00ops\u2019\uFE00 key0\uFE00",
      // A non-joiner after a shadda (Persian), chancery script, fullwidth punctuation's variant
      // (probe 41c F2).
      "\u062D\u0642\u0651\u200C\u0647\u0627",
      "\u212C\uFE00 \uFF01\uFE00",
    ]) {
      const kept = await send(current, "/api/admin/api-keys", {
        headers: bearer(admin.accessToken),
        body: { name, scopes: ["chat"] },
      });
      expect({ name, status: kept.status }).toEqual({ name, status: 201 });
      const stored = ((await kept.json()) as { apiKey: { name: string } }).apiKey.name;
      expect({ name, stored }).toEqual({ name, stored: name });
    }
  });
});

describe("IP blocks", () => {
  test("add with TTL and reason, list, remove; each action audited with the admin", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const added = await send(current, "/api/admin/blocks", {
      headers,
      peer: "198.51.100.20",
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
      peer: "198.51.100.21",
    });
    expect(removed.status).toBe(204);
    expect((await send(current, "/openapi.json", { peer: "2001:db8:5:6::1" })).status).toBe(200);
    // The rows' address is the subject blocked; the route says it was the admin API.
    const events = current.db.$client
      .query("SELECT type, actor, ip, route FROM audit_events WHERE type LIKE 'ip.%' ORDER BY id")
      .all();
    expect(events).toEqual([
      {
        type: "ip.blocked",
        actor: `user:${admin.userId}`,
        ip: "2001:db8:5:6::/64",
        route: "POST /api/admin/blocks",
      },
      {
        type: "ip.unblocked",
        actor: `user:${admin.userId}`,
        ip: "2001:db8:5:6::/64",
        route: "DELETE /api/admin/blocks/:id",
      },
    ]);
    expect(
      (await send(current, `/api/admin/blocks/${block.id}`, { method: "DELETE", headers })).status,
    ).toBe(404);
  });

  test("a block's reason is stored with secrets and credentials redacted, as its audit row and log line show it (probe 35d F1)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const reason = `pasted ${TEST_JWT_SECRET} and ${admin.refreshToken} by mistake`;
    const added = await send(current, "/api/admin/blocks", {
      headers,
      body: { address: "198.51.100.77", ttlMinutes: 5, reason },
    });
    expect(added.status).toBe(201);
    const shown = [
      ((await added.json()) as { reason: string }).reason,
      (
        (await (await send(current, "/api/admin/blocks", { headers })).json()) as {
          blocks: { reason: string }[];
        }
      ).blocks[0]!.reason,
      (current.db.$client.query("SELECT reason FROM ip_blocks").get() as { reason: string }).reason,
    ];
    for (const text of shown) {
      expect(text).toBe("pasted [REDACTED] and [REDACTED] by mistake");
    }
    expect(current.logs.text).not.toContain(TEST_JWT_SECRET);
    expect(current.logs.text).not.toContain(admin.refreshToken);
  });

  test("a secret in a reason is redacted in another spelling too: fullwidth, or with a zero-width space or soft hyphen inside (probe 39b F6)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    const fullwidth = [...TEST_JWT_SECRET]
      .map((c) => String.fromCodePoint(c.codePointAt(0)! + 0xfee0))
      .join("");
    const spellings = [
      `${TEST_JWT_SECRET.slice(0, 10)}\u200b${TEST_JWT_SECRET.slice(10)}`,
      `${TEST_JWT_SECRET.slice(0, 20)}\u00ad${TEST_JWT_SECRET.slice(20)}`,
      fullwidth,
      // A Cyrillic letter for a Latin one, a blank Braille pattern inside (probe 40b F2).
      TEST_JWT_SECRET.replace("e", "\u0435"),
      `${TEST_JWT_SECRET.slice(0, 15)}\u2800${TEST_JWT_SECRET.slice(15)}`,
    ];
    for (const [index, spelling] of spellings.entries()) {
      const added = await send(current, "/api/admin/blocks", {
        headers,
        body: { address: `198.51.100.${80 + index}`, ttlMinutes: 5, reason: `pasted ${spelling}` },
      });
      expect(added.status).toBe(201);
      expect(((await added.json()) as { reason: string }).reason).toBe("pasted [REDACTED]");
    }
    const stored = current.db.$client.query("SELECT reason FROM ip_blocks").all();
    expect(stored).toEqual(spellings.map(() => ({ reason: "pasted [REDACTED]" })));
  });

  test("a reason that reorders itself (a right-to-left override, an isolate) is 422, so no secret hides written backwards (probe 40b F2)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    for (const reason of [`\u202e${[...TEST_JWT_SECRET].reverse().join("")}`, "a\u2067b\u2069"]) {
      const refused = await send(current, "/api/admin/blocks", {
        headers: bearer(admin.accessToken),
        body: { address: "198.51.100.90", ttlMinutes: 5, reason },
      });
      expect(refused.status).toBe(422);
      const problem = (await refused.json()) as { errors: { field: string }[] };
      expect(problem.errors.map((error) => error.field)).toEqual(["body/reason"]);
    }
    expect(current.services.ipBlocks.listActive()).toEqual([]);
  });

  test("a reason with a lone surrogate, or cut at 500 inside an emoji, still blocks: stored well-formed, matching its seal (probe 37a F1)", async () => {
    const short = "vt8chars";
    current = buildTestApp({ env: { WHATSAPP_VERIFY_TOKEN: short } });
    const admin = await signUp(current, { role: "admin" });
    const headers = bearer(admin.accessToken);
    // Redacted, the secrets take it past 500 with the emoji's two halves at 499 and 500.
    const grown = `${short.repeat(49)}${"x".repeat(9)}\u{1F600}tail`;
    const reasons = [grown, "lone \ud83d surrogate", "lone \ude00 low"];
    const addresses = ["198.51.100.81", "198.51.100.82", "198.51.100.83"];
    for (const [i, reason] of reasons.entries()) {
      // Sent as JSON escapes: a lone surrogate cannot be written as UTF-8.
      const added = await send(current, "/api/admin/blocks", {
        headers: { ...headers, "content-type": "application/json" },
        body: JSON.stringify({ address: addresses[i], ttlMinutes: 5, reason }),
      });
      expect(added.status).toBe(201);
      const stored = ((await added.json()) as { reason: string }).reason;
      expect(stored.isWellFormed()).toBe(true);
      expect(stored.length).toBeLessThanOrEqual(500);
    }
    const listed = (await (await send(current, "/api/admin/blocks", { headers })).json()) as {
      blocks: { address: string }[];
    };
    expect(listed.blocks.map((block) => block.address).sort()).toEqual(addresses);
    for (const peer of addresses) {
      expect((await send(current, "/openapi.json", { peer })).status).toBe(403);
    }
    current.services.audit.flush();
    const tampered = current.db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE type = 'ip.block_tampered'")
      .get();
    expect(tampered).toEqual({ n: 0 });
  });

  test("a reason of many short secrets, longer once redacted, is stored no longer than the API's bound (probe 36a F4)", async () => {
    const short = "vt8chars";
    current = buildTestApp({ env: { WHATSAPP_VERIFY_TOKEN: short } });
    const admin = await signUp(current, { role: "admin" });
    const reason = short.repeat(62);
    expect(reason.length).toBeLessThanOrEqual(500);
    const added = await send(current, "/api/admin/blocks", {
      headers: bearer(admin.accessToken),
      body: { address: "198.51.100.78", ttlMinutes: 5, reason },
    });
    expect(added.status).toBe(201);
    const stored = ((await added.json()) as { reason: string }).reason;
    expect(stored).toStartWith("[REDACTED][REDACTED]");
    expect(stored).toHaveLength(500);
    expect(stored).not.toContain(short);
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

  test("a block covering the trusted proxy the request came through is 409 too; another proxy's is not (probe 32d F2)", async () => {
    current = buildTestApp({ env: { TRUST_PROXY: "loopback" } });
    const admin = await signUp(current, { role: "admin", peer: "10.20.30.40" });
    const viaProxy = (address: string) =>
      send(current!, "/api/admin/blocks", {
        headers: { ...bearer(admin.accessToken), "x-forwarded-for": "10.20.30.40" },
        peer: "127.0.0.1",
        body: { address, ttlMinutes: 5, reason: "oops" },
      });
    for (const address of ["127.0.0.1", "::ffff:127.0.0.1"]) {
      const refused = await viaProxy(address);
      expect(refused.status).toBe(409);
      expect(await refused.text()).toContain("the proxy this request came through");
    }
    expect(current.services.ipBlocks.listActive()).toEqual([]);
    // Requests without X-Forwarded-For still reach the service through the proxy.
    expect((await send(current, "/openapi.json", { peer: "127.0.0.1" })).status).toBe(200);
    // Another loopback address is no proxy of this request: blocked as asked.
    expect((await viaProxy("127.0.0.2")).status).toBe(201);
  });

  for (const trustProxy of ["2", "loopback,10.9.0.0/16"]) {
    test(`with TRUST_PROXY=${trustProxy}, a block of any proxy the request came through is 409, the nearest or further out (probe 33b F2)`, async () => {
      current = buildTestApp({ env: { TRUST_PROXY: trustProxy } });
      const admin = await signUp(current, { role: "admin", peer: "10.20.30.40" });
      const throughTwo = (address: string) =>
        send(current!, "/api/admin/blocks", {
          headers: { ...bearer(admin.accessToken), "x-forwarded-for": "10.20.30.40, 10.9.9.9" },
          peer: "127.0.0.1",
          body: { address, ttlMinutes: 5, reason: "oops" },
        });
      for (const address of ["127.0.0.1", "10.9.9.9", "::ffff:10.9.9.9"]) {
        const refused = await throughTwo(address);
        expect({ address, status: refused.status }).toEqual({ address, status: 409 });
      }
      expect(current.services.ipBlocks.listActive()).toEqual([]);
      expect((await throughTwo("10.9.9.10")).status).toBe(201);
    });
  }

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
  test("a revoked admin key, a logged-out admin session or a demoted admin's key changes and reads nothing here: no key made, rotated or revoked, no block lifted, no admin list read", async () => {
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
        // Reads too (probe 26b F4): the audit log and every key are not for it either.
        const reads = [
          "/api/admin/api-keys",
          "/api/admin/audit",
          "/api/admin/blocks",
          "/api/admin/usage",
          "/api/admin/security/summary",
        ].map((path) => send(other, path, { headers }));
        for (const answer of await Promise.all([...changes, ...reads])) {
          expect(answer.status).toBe(401);
          expect(((await answer.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
          expect(answer.headers.get("www-authenticate")).toBe(
            'Bearer realm="palisade", error="invalid_token"',
          );
        }
      }
      // An admin demoted meanwhile: the key is narrowed to a user's scopes (chat), not revoked,
      // so it is told 403, as once this process hears of the demotion, never that it is no longer
      // valid (a client discarding it on invalid_token would lose a working key; probe 40b F3).
      const demoted = await signUp(target, { role: "admin" });
      const demotedKey = createKey(target, ["admin", "chat"], demoted.userId);
      const viaDemoted = { "x-api-key": demotedKey.key };
      expect((await send(other, "/api/admin/api-keys", { headers: viaDemoted })).status).toBe(200);
      const failures = async () => {
        const exported = await (await send(other, "/metrics")).text();
        const count = (reason: string) =>
          Number(
            exported
              .split("\n")
              .find((l) => l.startsWith(`auth_failures_total{reason="${reason}"}`))
              ?.split(" ")[1] ?? 0,
          );
        return { forbidden: count("forbidden"), revoked: count("revoked_api_key") };
      };
      const before = await failures();
      target.services.auth.setRole(demoted.userId, "user", "test");
      const lifted = await send(other, `/api/admin/blocks/${block.id}`, {
        method: "DELETE",
        headers: viaDemoted,
      });
      const demotedAnswers = [lifted];
      for (const path of ["/api/admin/api-keys", "/api/admin/audit"]) {
        demotedAnswers.push(await send(other, path, { headers: viaDemoted }));
      }
      for (const answer of demotedAnswers) {
        expect(answer.status).toBe(403);
        expect(((await answer.json()) as { code: string }).code).toBe("FORBIDDEN");
        expect(answer.headers.get("www-authenticate")).toBeNull();
      }
      expect(await failures()).toEqual({
        forbidden: before.forbidden + 3,
        revoked: before.revoked,
      });
      const refusedRows = target.db.$client
        .query(
          "SELECT route, actor FROM audit_events WHERE type = 'auth.forbidden' AND actor = ? ORDER BY id",
        )
        .all(`key:${demotedKey.record.id}`);
      expect(refusedRows).toEqual([
        { route: "DELETE /api/admin/blocks/:id", actor: `key:${demotedKey.record.id}` },
        { route: "GET /api/admin/api-keys", actor: `key:${demotedKey.record.id}` },
        { route: "GET /api/admin/audit", actor: `key:${demotedKey.record.id}` },
      ]);
      // And it still does what its owner may.
      expect((await send(other, "/api/auth/me", { headers: viaDemoted })).status).toBe(200);

      // A key without admin, or a user's session, ended here, asks an admin route there: the 401
      // of an ended credential, as any admin route answers it, not a 403 counted and audited as a
      // refusal (probe 41a F3).
      const plain = await signUp(target);
      const chatKey = createKey(target, ["chat"], plain.userId);
      const viaChatKey = { "x-api-key": chatKey.key };
      const viaSession = bearer(plain.accessToken);
      for (const headers of [viaChatKey, viaSession]) {
        expect((await send(other, "/api/admin/api-keys", { headers })).status).toBe(403);
      }
      const refusedBefore = await failures();
      expect(target.services.apiKeys.revoke(chatKey.record.id, "test")).toBe(true);
      expect(
        (
          await send(target, "/api/auth/logout", {
            headers: viaSession,
            body: { refreshToken: plain.refreshToken },
          })
        ).status,
      ).toBeLessThan(300);
      for (const headers of [viaChatKey, viaSession]) {
        const answer = await send(other, "/api/admin/api-keys", { headers });
        expect(answer.status).toBe(401);
        expect(answer.headers.get("www-authenticate")).toBe(
          'Bearer realm="palisade", error="invalid_token"',
        );
      }
      expect(await failures()).toEqual({
        forbidden: refusedBefore.forbidden,
        revoked: refusedBefore.revoked + 1,
      });
      // The demoted admin's key and the chat key were made here; nothing else.
      expect(target.db.$client.query("SELECT count(*) AS n FROM api_keys").get()).toEqual({
        n: (keysBefore as { n: number }).n + 2,
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

describe("requests already past the auth stage when their credential is revoked (probe 38c F1)", () => {
  test("a key revoked, a session logged out or an owner demoted right after the auth stage let its request by mints, rotates, revokes, blocks and lifts nothing: 401, or 403 for a demoted owner's key", async () => {
    // The stage said yes, the handler must not write.
    const ending = endedAfterAuthStage(() => current!.services);
    current = buildTestApp({ authStageStillAdmin: ending.authStageStillAdmin });
    const target = current;
    const db = target.db.$client;
    const count = (sql: string) => (db.query(sql).get() as { n: number }).n;
    const changes = (round: number) => {
      const victim = createKey(target, ["chat"], null);
      const rotated = createKey(target, ["chat"], null);
      const block = target.services.ipBlocks.block({
        address: `198.51.100.${round}`,
        reason: "spam",
        ttlMs: 3_600_000,
        source: "admin",
      });
      const address = `203.0.113.${round}`;
      return [
        {
          name: "mint",
          send: (headers: Record<string, string>) =>
            send(target, "/api/admin/api-keys", {
              headers,
              body: { name: "persistence", scopes: ["admin"] },
            }),
          madeNothing: (keysBefore: number) =>
            count("SELECT count(*) AS n FROM api_keys") === keysBefore,
        },
        {
          name: "rotate",
          send: (headers: Record<string, string>) =>
            send(target, `/api/admin/api-keys/${rotated.record.id}/rotate`, { headers, body: {} }),
          madeNothing: (keysBefore: number) =>
            count("SELECT count(*) AS n FROM api_keys") === keysBefore &&
            target.services.apiKeys.get(rotated.record.id)?.expiresAt === null,
        },
        {
          name: "revoke",
          send: (headers: Record<string, string>) =>
            send(target, `/api/admin/api-keys/${victim.record.id}`, { method: "DELETE", headers }),
          madeNothing: () => target.services.apiKeys.isActive(victim.record.id),
        },
        {
          name: "lift",
          send: (headers: Record<string, string>) =>
            send(target, `/api/admin/blocks/${block.id}`, { method: "DELETE", headers }),
          madeNothing: () =>
            target.services.ipBlocks.listActive().some((active) => active.id === block.id),
        },
        {
          name: "block",
          send: (headers: Record<string, string>) =>
            send(target, "/api/admin/blocks", {
              headers,
              body: { address, ttlMinutes: 60, reason: "spam" },
            }),
          madeNothing: () =>
            !target.services.ipBlocks.listActive().some((active) => active.address === address),
        },
      ];
    };
    let round = 0;
    for (const credential of ["key", "session", "demoted key", "demoted session"] as const) {
      for (const change of changes(++round)) {
        const admin = await signUp(target, { role: "admin" });
        const headers = credential.endsWith("key")
          ? { "x-api-key": createKey(target, ["admin", "chat"], admin.userId).key }
          : bearer(admin.accessToken);
        const keysBefore = count("SELECT count(*) AS n FROM api_keys");
        ending.arm(credential.startsWith("demoted") ? "demote" : "end");
        const answer = await change.send(headers);
        const asked = `${change.name} by ${credential}`;
        const body = (await answer.json()) as { code: string };
        if (credential === "demoted key") {
          // Narrowed to chat, not ended: the 403 the auth stage gives it a moment later (probe
          // 40b F3), never a challenge telling its client to discard a working key.
          expect({ asked, status: answer.status, code: body.code }).toEqual({
            asked,
            status: 403,
            code: "FORBIDDEN",
          });
          expect(answer.headers.get("www-authenticate")).toBeNull();
        } else {
          // A demotion ends the owner's sessions: theirs is the 401 of an ended credential.
          expect({ asked, status: answer.status, code: body.code }).toEqual({
            asked,
            status: 401,
            code: "UNAUTHENTICATED",
          });
          // The auth stage's 401, challenge and count included (probe 39b F4).
          expect(answer.headers.get("www-authenticate")).toBe(
            'Bearer realm="palisade", error="invalid_token"',
          );
        }
        expect({ asked, madeNothing: change.madeNothing(keysBefore) }).toEqual({
          asked,
          madeNothing: true,
        });
      }
    }
    const exported = await (await send(target, "/metrics")).text();
    for (const [reason, times] of [
      ["revoked_api_key", 5],
      ["revoked_token", 10],
      ["forbidden", 5],
    ] as const) {
      const line = exported
        .split("\n")
        .find((l) => l.startsWith(`auth_failures_total{reason="${reason}"}`));
      expect({ reason, count: Number(line?.split(" ")[1]) }).toEqual({ reason, count: times });
    }
    // Each 403 is recorded as the auth stage records one, at the matched route.
    const refused = db
      .query("SELECT route FROM audit_events WHERE type = 'auth.forbidden' ORDER BY id")
      .all()
      .map((row) => (row as { route: string }).route);
    expect(refused).toEqual([
      "POST /api/admin/api-keys",
      "POST /api/admin/api-keys/:id/rotate",
      "DELETE /api/admin/api-keys/:id",
      "DELETE /api/admin/blocks/:id",
      "POST /api/admin/blocks",
    ]);
  });
});

describe("the admin lists page (api-keys, blocks)", () => {
  type Page<Item> = { items: Item[]; nextCursor: string | null };
  const pages = async <Item>(
    target: TestApp,
    route: string,
    field: string,
    token: string,
    limit: number,
  ) => {
    const seen: Page<Item>[] = [];
    let cursor: string | null = null;
    do {
      const query = `limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const response = await send(target, `${route}?${query}`, { headers: bearer(token) });
      expect(response.status).toBe(200);
      const body = (await response.json()) as Record<string, unknown> & {
        nextCursor: string | null;
      };
      seen.push({ items: body[field] as Item[], nextCursor: body.nextCursor });
      cursor = body.nextCursor;
    } while (cursor !== null && seen.length < 20);
    return seen;
  };

  test("keys page newest first, ties by their place in the file, each key once; a key made between pages is not repeated", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const admin = await signUp(current, { role: "admin" });
    const made: string[] = [];
    for (let i = 0; i < 7; i++) {
      // Two keys share each instant: the id orders them.
      if (i % 2 === 0) clock.advance(1_000);
      made.push(createKey(current, ["chat"]).record.id);
    }
    const newestFirst = current.db.$client
      .query("SELECT id FROM api_keys ORDER BY created_at DESC, rowid DESC")
      .all()
      .map((row) => (row as { id: string }).id);
    expect(newestFirst).toHaveLength(7);

    const listed = await pages<{ id: string; tampered: boolean }>(
      current,
      "/api/admin/api-keys",
      "keys",
      admin.accessToken,
      3,
    );
    expect(listed.map((page) => page.items.length)).toEqual([3, 3, 1]);
    expect(listed.at(-1)!.nextCursor).toBeNull();
    expect(listed.flatMap((page) => page.items.map((key) => key.id))).toEqual(newestFirst);

    // A key made after the first page is newer than its cursor: the next pages hold the rest once.
    const first = listed[0]!;
    clock.advance(1_000);
    createKey(current, ["chat"]);
    const rest: string[] = [];
    let cursor = first.nextCursor;
    while (cursor !== null) {
      const response = await send(
        current,
        `/api/admin/api-keys?limit=3&cursor=${encodeURIComponent(cursor)}`,
        { headers: bearer(admin.accessToken) },
      );
      const body = (await response.json()) as { keys: { id: string }[]; nextCursor: string | null };
      rest.push(...body.keys.map((key) => key.id));
      cursor = body.nextCursor;
    }
    expect(rest).toEqual(newestFirst.slice(3));

    // Without a limit a page holds 100: all eight here, the newest first.
    const all = await send(current, "/api/admin/api-keys", { headers: bearer(admin.accessToken) });
    const body = (await all.json()) as { keys: { id: string }[]; nextCursor: string | null };
    expect(body.keys).toHaveLength(8);
    expect(body.nextCursor).toBeNull();
  });

  test("a key failing its seal is marked on whichever page it falls", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const admin = await signUp(current, { role: "admin" });
    const owner = await signUp(current);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      clock.advance(1_000);
      ids.push(createKey(current, ["chat"], i === 0 ? owner.userId : null).record.id);
    }
    // The oldest key's owner and the second oldest key are edited in the file: both on page 3.
    current.db.$client.run("UPDATE users SET role = 'admin' WHERE id = ?", [owner.userId]);
    current.db.$client.run("UPDATE api_keys SET scopes = '[\"admin\"]' WHERE id = ?", [ids[1]!]);
    const listed = await pages<{
      id: string;
      tampered: boolean;
      owner: { id: string; email: string } | null;
    }>(current, "/api/admin/api-keys", "keys", admin.accessToken, 2);
    const keys = listed.flatMap((page) => page.items);
    expect(keys.map((key) => [key.id, key.tampered])).toEqual([
      [ids[4]!, false],
      [ids[3]!, false],
      [ids[2]!, false],
      [ids[1]!, true],
      [ids[0]!, true],
    ]);
    expect(keys.at(-1)!.owner).toEqual({ id: owner.userId, email: owner.email });
  });

  test("key rows written into the file with values Palisade never writes are listed as the file holds them, marked, and paged past: never a 500 (probe 46b F1)", async () => {
    const clock = new ManualClock();
    current = buildTestApp({
      clock,
      env: { RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" },
    });
    const admin = await signUp(current, { role: "admin" });
    const owner = await signUp(current);
    const real: string[] = [];
    for (let i = 0; i < 3; i++) {
      clock.advance(1_000);
      real.push(createKey(current, ["chat"], i === 0 ? owner.userId : null).record.id);
    }
    const sqlite = current.db.$client;
    const insert = sqlite.prepare(
      "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, expires_at, last_used_at, revoked_at, origin, seal) VALUES (?, ?, ?, '00', '[\"chat\"]', NULL, ?, ?, ?, ?, ?, 'x')",
    );
    const now = clock.now();
    // Text sorts above every number in SQLite: ordered by the column, this one came first and no
    // page could be asked for after it.
    insert.run("forged-text-created", "n1", "pal_live_AAAAAAA", "soon", null, null, null, "api");
    insert.run("forged-text-times", "n2", "pal_live_BBBBBBB", now, "soon", "x", "y", "api");
    insert.run(
      "forged-blobs",
      new Uint8Array([104, 105]),
      new Uint8Array([112]),
      now,
      null,
      null,
      null,
      "api",
    );
    insert.run("forged-origin", "n4", "pal_live_DDDDDDD", now, 1e300, null, null, "weird");
    insert.run("forged id. with spaces", "n5", "pal_live_EEEEEEE", 1.5, null, null, null, "api");
    // A real key's owner whose email the file holds as a BLOB.
    sqlite.run("UPDATE users SET email = X'6869' WHERE id = ?", [owner.userId]);

    type Listed = {
      id: string;
      name: string;
      prefix: string;
      createdAt: number | null;
      expiresAt: number | null;
      lastUsedAt: number | null;
      revokedAt: number | null;
      origin: string | null;
      owner: { id: string; email: string } | null;
      tampered: boolean;
    };
    const listed = await pages<Listed>(
      current,
      "/api/admin/api-keys",
      "keys",
      admin.accessToken,
      2,
    );
    const keys = listed.flatMap((page) => page.items);
    const byId = new Map(keys.map((key) => [key.id, key]));
    // Every key once: the rows with no time head the list, then the rest newest first, each time's
    // latest written first.
    expect(keys.map((key) => key.id)).toEqual([
      "forged id. with spaces",
      "forged-text-created",
      "forged-origin",
      "forged-blobs",
      "forged-text-times",
      real[2]!,
      real[1]!,
      real[0]!,
    ]);
    for (const id of [
      "forged-text-created",
      "forged-text-times",
      "forged-blobs",
      "forged-origin",
    ]) {
      expect([id, byId.get(id)!.tampered]).toEqual([id, true]);
    }
    expect(byId.get("forged-text-created")!.createdAt).toBeNull();
    expect(byId.get("forged id. with spaces")!.createdAt).toBeNull();
    expect(byId.get("forged-text-times")).toMatchObject({
      createdAt: now,
      expiresAt: null,
      lastUsedAt: null,
      revokedAt: null,
    });
    expect(byId.get("forged-blobs")).toMatchObject({ name: "hi", prefix: "p" });
    expect(byId.get("forged-origin")).toMatchObject({ origin: null, expiresAt: null });
    expect(byId.get(real[0]!)!.owner).toEqual({ id: owner.userId, email: "hi" });
    expect(byId.get(real[0]!)!.tampered).toBe(true);

    // Ids no cursor could hold by id (longer than it takes, empty, a BLOB), at the real keys' times:
    // every page size pages past them and shows every key once (probe 47a F1: the list stopped
    // there, 422 for its own cursor, or skipped the real keys of that time).
    const realTime = sqlite
      .query("SELECT created_at AS t FROM api_keys WHERE id = ?")
      .get(real[1]!) as {
      t: number;
    };
    insert.run("x".repeat(300), "n6", "pal_live_FFFFFFF", realTime.t, null, null, null, "api");
    insert.run("", "n7", "pal_live_GGGGGGG", realTime.t, null, null, null, "api");
    insert.run(new Uint8Array([0]), "n8", "pal_live_HHHHHHH", realTime.t, null, null, null, "api");
    // Places in the file no JS number holds exactly, or a cursor of digits alone (48a F1).
    const placed = sqlite.prepare(
      "INSERT INTO api_keys (rowid, id, name, prefix, secret_hash, scopes, created_at, origin, seal) VALUES (?, ?, 'n', ?, '00', '[\"chat\"]', ?, 'api', 'x')",
    );
    for (const [rowid, id] of [
      [-1n, "placed-negative"],
      [9_007_199_254_740_993n, "placed-past-2^53"],
      [9_007_199_254_740_995n, "placed-past-2^53-again"],
    ] as const) {
      placed.run(rowid, id, `pal_live_${id.slice(-7)}`, realTime.t);
    }
    for (const limit of [1, 2, 3, 4]) {
      const all = (
        await pages<Listed>(current, "/api/admin/api-keys", "keys", admin.accessToken, limit)
      ).flatMap((page) => page.items.map((key) => key.id));
      expect([limit, all.length, new Set(all).size]).toEqual([limit, 14, 14]);
      expect(all).toContain(real[1]!);
      expect(all).toContain(real[0]!);
    }
  });

  test("blocks in force page newest first, each once; lifted and expired ones are not listed", async () => {
    const clock = new ManualClock();
    current = buildTestApp({
      clock,
      env: { RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" },
    });
    const admin = await signUp(current, { role: "admin" });
    const { ipBlocks } = current.services;
    const made: number[] = [];
    for (let i = 0; i < 9; i++) {
      if (i % 3 === 0) clock.advance(1_000);
      const ttlMs = i === 4 ? 2_000 : 60 * 60_000;
      made.push(
        ipBlocks.block({ address: `192.0.2.${10 + i}`, reason: "test", ttlMs, source: "admin" }).id,
      );
    }
    const lifted = await send(current, `/api/admin/blocks/${made[7]}`, {
      method: "DELETE",
      headers: bearer(admin.accessToken),
    });
    expect(lifted.status).toBe(204);
    clock.advance(5_000); // block 4 has expired
    const inForce = current.db.$client
      .query(
        "SELECT id FROM ip_blocks WHERE lifted_at IS NULL AND expires_at > ? ORDER BY created_at DESC, id DESC",
      )
      .all(clock.now())
      .map((row) => (row as { id: number }).id);
    expect(inForce).toHaveLength(7);
    const listed = await pages<{ id: number }>(
      current,
      "/api/admin/blocks",
      "blocks",
      admin.accessToken,
      3,
    );
    expect(listed.map((page) => page.items.length)).toEqual([3, 3, 1]);
    expect(listed.flatMap((page) => page.items.map((block) => block.id))).toEqual(inForce);

    // Block rows written into the file with ids no JS number holds exactly, or negative, at a real
    // block's time: left out (they fail their seals), and paged past at every size (probe 48a F1).
    const at = current.db.$client
      .query("SELECT created_at AS t FROM ip_blocks WHERE id = ?")
      .get(inForce[3]!) as { t: number };
    const forge = current.db.$client.prepare(
      "INSERT INTO ip_blocks (id, address, reason, source, created_at, expires_at, seal) VALUES (?, ?, 'forged', 'admin', ?, ?, 'x')",
    );
    forge.run(-1n, "198.51.100.1", at.t, clock.now() + 3_600_000);
    forge.run(9_007_199_254_740_993n, "198.51.100.2", at.t, clock.now() + 3_600_000);
    forge.run(9_007_199_254_740_995n, "198.51.100.3", at.t, clock.now() + 3_600_000);
    // And times no cursor can hold: a fraction, text, past 2^53 (49a F1).
    forge.run(7, "198.51.100.4", at.t + 0.5, clock.now() + 3_600_000);
    forge.run(8, "198.51.100.5", "soon", clock.now() + 3_600_000);
    forge.run(9, "198.51.100.6", 9_007_199_254_740_993n, clock.now() + 3_600_000);
    forge.run(10, "198.51.100.7", 12_345_678_901_234_567n, clock.now() + 3_600_000);
    for (const limit of [1, 2, 3]) {
      const all = (
        await pages<{ id: number }>(
          current,
          "/api/admin/blocks",
          "blocks",
          admin.accessToken,
          limit,
        )
      ).flatMap((page) => page.items.map((block) => block.id));
      expect([limit, all]).toEqual([limit, inForce]);
    }
  });

  test("a cursor the route did not give, or a limit out of 1–500, is 422 naming the parameter", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    createKey(current, ["chat"]);
    createKey(current, ["chat"]);
    const keysPage = (await (
      await send(current, "/api/admin/api-keys?limit=1", { headers: bearer(admin.accessToken) })
    ).json()) as { nextCursor: string };
    // A cursor of the old form, by key id (a client paging across the upgrade): 422, not a wrong page.
    const byKeyId = Buffer.from(`${Date.now()}.${keysPage.nextCursor}`).toString("base64url");
    for (const [route, query] of [
      ["/api/admin/api-keys", "cursor=not-a-cursor"],
      ["/api/admin/api-keys", `cursor=${byKeyId}`],
      ["/api/admin/api-keys", `cursor=${Buffer.from("1.").toString("base64url")}`],
      ["/api/admin/api-keys", `cursor=${Buffer.from("soon.a").toString("base64url")}`],
      ["/api/admin/blocks", "cursor=not-a-cursor"],
      ["/api/admin/api-keys", "limit=0"],
      ["/api/admin/api-keys", "limit=501"],
      ["/api/admin/blocks", "limit=501"],
      ["/api/admin/blocks", "limit=1.5"],
    ] as const) {
      const response = await send(current, `${route}?${query}`, {
        headers: bearer(admin.accessToken),
      });
      expect(response.status).toBe(422);
      const problem = (await response.json()) as { code: string; errors: { field: string }[] };
      expect(problem.code).toBe("VALIDATION_FAILED");
      expect(problem.errors[0]!.field).toBe(`query/${query.split("=")[0]}`);
    }
  });
});

test("a principal's 403s are audited once a minute per route, counted every time (probe 83b F2: a row each, 90 days, ~5 GB a principal)", async () => {
  const clock = new ManualClock();
  const target = buildTestApp({ clock });
  try {
    const alice = await signUp(target);
    const bob = await signUp(target);
    const refused = async (accessToken: string) =>
      (await send(target, "/api/admin/audit", { headers: bearer(accessToken) })).status;
    for (let i = 0; i < 10; i++) expect(await refused(alice.accessToken)).toBe(403);
    expect(await refused(bob.accessToken)).toBe(403);
    const rows = () => {
      target.services.audit.flush();
      return target.db.$client
        .query("SELECT actor FROM audit_events WHERE type = 'auth.forbidden' ORDER BY id")
        .all()
        .map((row) => (row as { actor: string }).actor);
    };
    expect(rows()).toEqual([`user:${alice.userId}`, `user:${bob.userId}`]);
    // Another route is another row: one refusal hides no other (probe 83g F4).
    const blocks = await send(target, "/api/admin/blocks", { headers: bearer(alice.accessToken) });
    expect(blocks.status).toBe(403);
    expect(rows()).toEqual([`user:${alice.userId}`, `user:${bob.userId}`, `user:${alice.userId}`]);
    clock.advance(61_000);
    expect(await refused(alice.accessToken)).toBe(403);
    expect(rows()).toEqual([
      `user:${alice.userId}`,
      `user:${bob.userId}`,
      `user:${alice.userId}`,
      `user:${alice.userId}`,
    ]);
    const exported = await (await send(target, "/metrics")).text();
    expect(exported).toContain('auth_failures_total{reason="forbidden"} 13');
  } finally {
    target.close();
  }
});
