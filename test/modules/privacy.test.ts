import { afterEach, describe, expect, test } from "bun:test";
import { Elysia } from "elysia";
import { systemClock } from "../../src/clock";
import { openDatabase } from "../../src/db/client";
import { createLogger } from "../../src/logging/logger";
import { KEYS_AHEAD_PART } from "../../src/modules/auth/privacy";
import { auditEventsContributor } from "../../src/modules/privacy/audit-contributor";
import { ERASURE_PART_ROWS } from "../../src/modules/privacy/erasure-parts";
import { ErasureResumption } from "../../src/modules/privacy/erasure-resumption";
import { EXPORTS_IN_FLIGHT_MAX } from "../../src/modules/privacy/index";
import { PrivacyService } from "../../src/modules/privacy/service";
import { AuditKeys } from "../../src/plugins/audit/chain";
import { SqliteAuditLog, verifyAuditChain } from "../../src/plugins/audit/log";
import { buildTestApp, LogCapture, send, serveInProcess, type TestApp } from "../support/app";
import { bearer, createKey, signUp } from "../support/auth";
import { asUser, chat } from "../support/chat";
import { ManualClock } from "../support/clock";
import { eraseWatching } from "../support/erasure";
import { anotherInstance, untoldInstance } from "../support/instance";
import { buildPaymentsApp } from "../support/payments";
import { planOf, statementsPrepared } from "../support/query-plans";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

describe("an export not read to its end (probe 55a F1)", () => {
  const exportLines = (target: TestApp) =>
    target.logs.entries.filter((entry) => String(entry.code ?? "").startsWith("EXPORT_"));

  test("a HEAD over a socket reads and sends no body, and logs none as not read", async () => {
    current = buildTestApp();
    const target = current;
    const alice = await signUp(target);
    const server = serveInProcess(target);
    try {
      const head = await fetch(new URL("/api/me/export", server.url), {
        method: "HEAD",
        headers: bearer(alice.accessToken),
      });
      expect(head.status).toBe(200);
      expect(head.headers.get("content-type")).toBe("application/json; charset=utf-8");
      expect(await head.text()).toBe("");
      await Bun.sleep(50);
    } finally {
      await server.shutdown("test");
    }
    expect(exportLines(target)).toEqual([]);
  });

  test("one the service's stop cuts at its drain time is logged as that, a warning, not as the client's leaving", async () => {
    current = buildTestApp({
      env: { RATE_LIMIT_CHAT: "1000", RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" },
    });
    const target = current;
    const alice = await signUp(target);
    // Longer than one of the export's 64 Ki-character chunks.
    for (let i = 0; i < 30; i++) {
      expect(
        (await chat(target, asUser(alice), { message: `${i} ${"w".repeat(3000)}` })).status,
      ).toBe(200);
    }
    // Read as a slow client reads it: a chunk, then nothing more, when the drain time is up.
    const response = await send(target, "/api/me/export", { headers: bearer(alice.accessToken) });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    expect((await reader.read()).done).toBe(false);
    // What the server's stop calls at its drain time (src/server.ts, onDrainTimeout).
    await target.services.endInFlight();
    expect(
      await reader.read().then(
        () => "read on",
        () => "cut",
      ),
    ).toBe("cut");
    await reader.cancel().catch(() => undefined);
    expect(exportLines(target).map((entry) => [entry.level, entry.code])).toEqual([
      ["warn", "EXPORT_INTERRUPTED"],
    ]);
  });
});

test("export returns the caller's data and nobody else's", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  createKey(current, ["chat"], alice.userId);
  createKey(current, ["chat"], bob.userId);
  current.services.audit.flush();
  const response = await send(current, "/api/me/export", { headers: bearer(alice.accessToken) });
  expect(response.status).toBe(200);
  const document = (await response.json()) as {
    profile: { id: string; email: string };
    sessions: unknown[];
    apiKeys: { name: string }[];
    auditEvents: { type: string }[];
  };
  expect(document.profile).toMatchObject({ id: alice.userId, email: alice.email });
  expect(document.sessions).toHaveLength(1);
  expect(document.apiKeys).toHaveLength(1);
  expect(document.auditEvents.map((e) => e.type)).toEqual(
    expect.arrayContaining(["auth.register.succeeded", "auth.login.succeeded"]),
  );
  const text = JSON.stringify(document);
  expect(text).not.toContain(bob.userId);
  expect(text).not.toContain(bob.email);
  expect(text).not.toContain("password");
  expect(text).not.toContain("hash");
});

test("export shows no third party's address: a failed login on the account from elsewhere is listed without it", async () => {
  current = buildTestApp();
  const alice = await signUp(current, { peer: "10.20.0.1" });
  // Someone else tries Alice's account from their own address.
  const failed = await send(current, "/api/auth/login", {
    body: { email: alice.email, password: "not-alices-password-at-all" },
    peer: "203.0.113.77",
  });
  expect(failed.status).toBe(401);
  current.services.audit.flush();
  const stored = current.db.$client
    .query("SELECT count(*) AS n FROM audit_events WHERE actor = ? AND ip = '203.0.113.77'")
    .get(`user:${alice.userId}`) as { n: number };
  expect(stored.n).toBe(1);

  const response = await send(current, "/api/me/export", {
    headers: bearer(alice.accessToken),
    peer: "10.20.0.1",
  });
  expect(response.status).toBe(200);
  const text = await response.text();
  expect(text).not.toContain("203.0.113.77");
  const { auditEvents } = JSON.parse(text) as {
    auditEvents: { type: string; ip: string | null; outcome: string }[];
  };
  expect(auditEvents.find((e) => e.type === "auth.login.failed")).toMatchObject({ ip: null });
  // Her own successful sign-in keeps the address she used.
  expect(auditEvents.find((e) => e.type === "auth.login.succeeded")).toMatchObject({
    ip: "10.20.0.1",
  });
});

test("export and erasure need a signed-in user: an API key is refused", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const { key } = createKey(current, ["chat"], alice.userId);
  expect((await send(current, "/api/me/export", { headers: { "x-api-key": key } })).status).toBe(
    403,
  );
  expect(
    (await send(current, "/api/me", { method: "DELETE", headers: { "x-api-key": key } })).status,
  ).toBe(403);
});

test("the key revocations an erasure makes carry its request id, and no address (probe 37a F3)", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  createKey(current, ["chat"], alice.userId);
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
  });
  expect(erased.status).toBe(204);
  current.services.audit.flush();
  const rows = current.db.$client
    .query(
      "SELECT type, ip, request_id AS requestId FROM audit_events WHERE type IN ('admin.key.revoked', 'privacy.erased') ORDER BY id",
    )
    .all();
  const requestId = erased.headers.get("x-request-id");
  expect(rows).toEqual([
    { type: "admin.key.revoked", ip: null, requestId },
    { type: "privacy.erased", ip: null, requestId },
  ]);
});

test("erasure revokes sessions and keys, pseudonymises audit rows and keeps the chain intact", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const { key } = createKey(current, ["chat"], alice.userId);
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
  });
  expect(erased.status).toBe(204);

  expect((await send(current, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    401,
  );
  expect((await send(current, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(401);
  const refresh = await send(current, "/api/auth/refresh", {
    body: { refreshToken: alice.refreshToken },
  });
  expect(refresh.status).toBe(401);
  expect((await send(current, "/api/auth/me", { headers: bearer(bob.accessToken) })).status).toBe(
    200,
  );

  const sqlite = current.db.$client;
  expect(sqlite.query("SELECT count(*) AS n FROM users WHERE id = ?").get(alice.userId)).toEqual({
    n: 0,
  });
  expect(
    sqlite.query("SELECT count(*) AS n FROM refresh_tokens WHERE user_id = ?").get(alice.userId),
  ).toEqual({ n: 0 });
  current.services.audit.flush();
  const dump = JSON.stringify(sqlite.query("SELECT actor, ip, detail FROM audit_events").all());
  expect(dump).not.toContain(`user:${alice.userId}`);
  expect(dump).not.toContain(alice.email);
  const pseudonymised = sqlite
    .query(
      "SELECT type, actor, ip, subject_salt AS salt FROM audit_events WHERE actor LIKE 'erased:%' ORDER BY id",
    )
    .all() as { type: string; actor: string; ip: string | null; salt: string | null }[];
  expect(pseudonymised.map((r) => r.type)).toEqual([
    "auth.register.succeeded",
    "auth.login.succeeded",
    "admin.key.revoked",
    "privacy.erased",
  ]);
  expect(new Set(pseudonymised.map((r) => r.actor)).size).toBe(1);
  // The rows written before erasure lost their address and the salt that committed to it.
  expect(pseudonymised.slice(0, 2).every((r) => r.ip === null && r.salt === null)).toBe(true);
  expect(verifyAuditChain(sqlite, new AuditKeys(current.config.audit.secretKey)).ok).toBe(true);
  // Bob's rows are untouched.
  expect(dump).toContain(`user:${bob.userId}`);
});

describe("the ids other events' details name (probe 26b F1, F2)", () => {
  /** An admin looks up a user's usage, a key is made for the user: two details name the user. */
  const namedInDetails = async (target: TestApp) => {
    const admin = await signUp(target, { role: "admin" });
    const user = await signUp(target);
    const made = createKey(target, ["chat"], user.userId);
    const looked = await send(target, `/api/admin/usage?principal=user:${user.userId}`, {
      headers: bearer(admin.accessToken),
    });
    expect(looked.status).toBe(200);
    target.services.audit.flush();
    return { admin, user, made };
  };
  const rowOf = (target: TestApp, type: string) =>
    target.db.$client
      .query("SELECT id, actor, ip, detail FROM audit_events WHERE type = ? ORDER BY id DESC")
      .get(type) as { id: number; actor: string; ip: string | null; detail: string };
  const verified = (target: TestApp) =>
    verifyAuditChain(target.db.$client, new AuditKeys(target.config.audit.secretKey));

  test("erasure pseudonymises them in others' events, drops the key's name, and the chain verifies; so does the actor's own erasure later", async () => {
    current = buildTestApp();
    const { admin, user, made } = await namedInDetails(current);
    const lookedUp = rowOf(current, "admin.usage.queried");
    expect(JSON.parse(lookedUp.detail).principal).toBe(`user:${user.userId}`);
    expect(JSON.parse(rowOf(current, "admin.key.created").detail)).toMatchObject({
      keyId: made.record.id,
      name: made.record.name,
    });

    const erased = await send(current, "/api/me", {
      method: "DELETE",
      headers: bearer(user.accessToken),
    });
    expect(erased.status).toBe(204);
    current.services.audit.flush();
    const sqlite = current.db.$client;
    const dump = JSON.stringify(sqlite.query("SELECT actor, ip, detail FROM audit_events").all());
    for (const id of [user.userId, made.record.id]) expect(dump).not.toContain(id);
    // Nor in the index erasure found them by; the admin's own names stay.
    const names = sqlite.query("SELECT name FROM audit_event_names").values().flat();
    expect(JSON.stringify(names)).not.toContain(user.userId);
    expect(JSON.stringify(names)).not.toContain(made.record.id);
    expect(dump).not.toContain(`"name":"${made.record.name}"`);
    const pseudonym = rowOf(current, "privacy.erased").actor;
    expect(pseudonym).toMatch(/^erased:/);
    // The admin's own event keeps its actor and address; only the user it names is replaced.
    const after = rowOf(current, "admin.usage.queried");
    expect(after).toEqual({
      ...lookedUp,
      detail: JSON.stringify({ ...JSON.parse(lookedUp.detail), principal: pseudonym }),
    });
    expect(JSON.parse(rowOf(current, "admin.key.created").detail)).toMatchObject({
      keyId: pseudonym,
      name: null,
    });
    expect(verified(current).ok).toBe(true);

    // The admin erased later: the row already rewritten once is rewritten again, and verifies.
    const adminErased = await send(current, "/api/me", {
      method: "DELETE",
      headers: bearer(admin.accessToken),
    });
    expect(adminErased.status).toBe(204);
    current.services.audit.flush();
    const again = rowOf(current, "admin.usage.queried");
    expect(again.actor).toMatch(/^erased:/);
    expect(again.actor).not.toBe(pseudonym);
    expect(again.ip).toBeNull();
    expect(verified(current).ok).toBe(true);
  });

  test("a detail edited in the file before the erasure stays unverifiable after it", async () => {
    current = buildTestApp();
    const { user } = await namedInDetails(current);
    const row = rowOf(current, "admin.usage.queried");
    const edited = JSON.stringify({ ...JSON.parse(row.detail), day: "2020-01-01" });
    current.db.$client.run("UPDATE audit_events SET detail = ? WHERE id = ?", [edited, row.id]);
    const before = verified(current);
    expect(before).toMatchObject({ ok: false, badId: row.id });
    const erased = await send(current, "/api/me", {
      method: "DELETE",
      headers: bearer(user.accessToken),
    });
    expect(erased.status).toBe(204);
    expect(verified(current)).toMatchObject({ ok: false, badId: row.id });
  });

  test("an admin's export withholds the addresses it blocked and the other principals its events name", async () => {
    current = buildTestApp();
    const { admin, user, made } = await namedInDetails(current);
    // An admin revokes the user's key: the event names a key of someone else.
    const revoked = await send(current, `/api/admin/api-keys/${made.record.id}`, {
      method: "DELETE",
      headers: bearer(admin.accessToken),
    });
    expect(revoked.status).toBe(204);
    const blocked = await send(current, "/api/admin/blocks", {
      headers: bearer(admin.accessToken),
      body: { address: "198.51.100.7", ttlMinutes: 30, reason: "spam" },
    });
    expect(blocked.status).toBe(201);
    const exported = await send(current, "/api/me/export", { headers: bearer(admin.accessToken) });
    expect(exported.status).toBe(200);
    const document = (await exported.json()) as {
      auditEvents: { type: string; ip: string | null; detail: Record<string, unknown> }[];
    };
    const text = JSON.stringify(document);
    expect(text).not.toContain("198.51.100.7");
    expect(text).not.toContain(user.userId);
    const types = document.auditEvents.map((event) => event.type);
    expect(types).toContain("ip.blocked");
    const lookUp = document.auditEvents.find((event) => event.type === "admin.usage.queried")!;
    expect(lookUp.detail.principal).toBe("(another principal)");
    expect(text).not.toContain(made.record.id);
    const revocation = document.auditEvents.find((event) => event.type === "admin.key.revoked")!;
    expect(revocation.detail.keyId).toBe("(another principal)");

    // Once the user is erased, the pseudonym their ids were given is withheld the same way.
    expect(
      (await send(current, "/api/me", { method: "DELETE", headers: bearer(user.accessToken) }))
        .status,
    ).toBe(204);
    const later = (await (
      await send(current, "/api/me/export", { headers: bearer(admin.accessToken) })
    ).json()) as { auditEvents: { type: string; detail: Record<string, unknown> }[] };
    expect(JSON.stringify(later)).not.toContain("erased:");
    // The admin's own successful sign-in still shows the address it came from.
    const login = document.auditEvents.find((event) => event.type === "auth.login.succeeded")!;
    expect(login.ip).not.toBeNull();
  });

  test("an admin's erasure keeps the address it blocked and lifted on those rows, and drops its own address from the rest (probe 86e F4)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const blocked = await send(current, "/api/admin/blocks", {
      headers: bearer(admin.accessToken),
      body: { address: "198.51.100.7", ttlMinutes: 30, reason: "spam" },
      peer: "203.0.113.9",
    });
    expect(blocked.status).toBe(201);
    const block = (await blocked.json()) as { id: string };
    const lifted = await send(current, `/api/admin/blocks/${block.id}`, {
      method: "DELETE",
      headers: bearer(admin.accessToken),
      peer: "203.0.113.9",
    });
    expect(lifted.status).toBe(204);
    const erased = await send(current, "/api/me", {
      method: "DELETE",
      headers: bearer(admin.accessToken),
      peer: "203.0.113.9",
    });
    expect(erased.status).toBe(204);
    current.services.audit.flush();
    const rows = current.db.$client
      .query("SELECT type, actor, ip FROM audit_events WHERE actor LIKE 'erased:%' ORDER BY id")
      .all() as { type: string; actor: string; ip: string | null }[];
    expect(rows.filter((row) => row.type === "ip.blocked").map((row) => row.ip)).toEqual([
      "198.51.100.7",
    ]);
    expect(rows.filter((row) => row.type === "ip.unblocked").map((row) => row.ip)).toEqual([
      "198.51.100.7",
    ]);
    expect(rows.some((row) => row.type === "auth.login.succeeded")).toBe(true);
    expect(JSON.stringify(rows)).not.toContain("203.0.113.9");
    expect(
      verifyAuditChain(current.db.$client, new AuditKeys(current.config.audit.secretKey)).ok,
    ).toBe(true);
  });
});

test("3 exports per minute per user", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) {
    const response = await send(current, "/api/me/export", {
      headers: bearer(alice.accessToken),
      peer: `10.3.0.${i}`,
    });
    // Each read to its end: one export at a time is a user's (a second meanwhile is 409).
    await response.text();
    statuses.push(response.status);
  }
  expect(statuses).toEqual([200, 200, 200, 429]);
});

test("contributors are part of export, erasure and retention", async () => {
  const calls: string[] = [];
  const { createServices } = await import("../../src/services");
  current = buildTestApp();
  const services = createServices({
    config: current.config,
    db: current.db,
    logger: current.logger,
    maintenanceIntervalMs: 0,
    extraFeatures: [
      {
        name: "notes",
        routeClasses: [],
        routes: () => new Elysia(),
        privacy: [
          {
            name: "notes",
            export: (userId) => [{ owner: userId, text: "hello" }],
            erase: (userId) => calls.push(`erase ${userId}`),
            retain: () => {
              calls.push("retain");
              return 2;
            },
          },
        ],
      },
    ],
  });
  const alice = await signUp(current);
  expect(services.privacy.export(alice.userId)?.notes).toEqual([
    { owner: alice.userId, text: "hello" },
  ]);
  services.runMaintenance();
  expect(services.privacy.retain(Date.now())).toBe(2);
  await services.privacy.erase(alice.userId, { ip: null, requestId: null });
  expect(calls).toEqual(["retain", "retain", `erase ${alice.userId}`]);
  services.close();
});

test("what the user's own API keys did is exported with the user's data and pseudonymised on erasure", async () => {
  current = buildTestApp();
  const user = await signUp(current);
  const other = await signUp(current);
  const { key, record } = createKey(current, ["chat"], user.userId);
  const theirs = createKey(current, ["chat"], other.userId);
  // Each key is refused on a privacy route (a person's right, not a key's): an audit row each.
  for (const k of [key, theirs.key]) {
    const refused = await send(current, "/api/me/export", {
      headers: { "x-api-key": k },
      peer: "198.51.100.44",
    });
    expect(refused.status).toBe(403);
  }
  const exported = await send(current, "/api/me/export", { headers: bearer(user.accessToken) });
  const document = (await exported.json()) as {
    auditEvents: { type: string; ip: string | null; outcome: string }[];
  };
  const forbidden = document.auditEvents.filter((event) => event.type === "auth.forbidden");
  expect(forbidden).toHaveLength(1);
  expect(forbidden[0]!.ip).toBeNull();

  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(user.accessToken),
  });
  expect(erased.status).toBe(204);
  const sqlite = current.db.$client;
  const left = sqlite
    .query("SELECT count(*) AS n FROM audit_events WHERE actor = ? OR ip = ?")
    .get(`key:${record.id}`, "198.51.100.44") as { n: number };
  // The other user's key row keeps its actor; only its address is the shared one.
  const othersRow = sqlite
    .query("SELECT actor FROM audit_events WHERE type = 'auth.forbidden' AND actor = ?")
    .get(`key:${theirs.record.id}`) as { actor: string } | null;
  expect(othersRow?.actor).toBe(`key:${theirs.record.id}`);
  expect(left.n).toBe(1);
  expect(verifyAuditChain(sqlite, new AuditKeys(current.config.audit.secretKey)).ok).toBe(true);
});

test("an admin's blocks and lockouts: exported without the addresses blocked; erasure names the pseudonym and ends the lockouts", async () => {
  current = buildTestApp();
  const admin = await signUp(current, { role: "admin" });
  const { key, record } = createKey(current, ["admin"], admin.userId);
  const byToken = await send(current, "/api/admin/blocks", {
    headers: bearer(admin.accessToken),
    body: { address: "198.51.100.7", ttlMinutes: 300, reason: "spam" },
  });
  expect(byToken.status).toBe(201);
  const byKey = await send(current, "/api/admin/blocks", {
    headers: { "x-api-key": key },
    body: { address: "198.51.100.8", ttlMinutes: 300, reason: "scraping" },
  });
  expect(byKey.status).toBe(201);
  const { ipBlocks } = current.services;
  ipBlocks.block({ address: `key:${record.id}`, reason: "locked", ttlMs: 60_000, source: "auto" });
  ipBlocks.block({
    address: "198.51.100.9",
    reason: "someone else's",
    ttlMs: 60_000,
    source: "auto",
  });

  const exported = await send(current, "/api/me/export", { headers: bearer(admin.accessToken) });
  const document = (await exported.json()) as {
    ipBlocks: { lockouts: { principal: string }[]; blocksMade: { reason: string }[] };
  };
  expect(document.ipBlocks.lockouts.map((l) => l.principal)).toEqual([`key:${record.id}`]);
  expect(document.ipBlocks.blocksMade.map((b) => b.reason).sort()).toEqual(["scraping", "spam"]);
  expect(JSON.stringify(document.ipBlocks)).not.toContain("198.51.100.");

  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(admin.accessToken),
  });
  expect(erased.status).toBe(204);
  const sqlite = current.db.$client;
  const rows = sqlite
    .query("SELECT address, created_by AS createdBy FROM ip_blocks ORDER BY address")
    .all() as { address: string; createdBy: string | null }[];
  current.services.audit.flush();
  const pseudonym = (
    sqlite.query("SELECT actor FROM audit_events WHERE type = 'privacy.erased'").get() as {
      actor: string;
    }
  ).actor;
  expect(pseudonym).toMatch(/^erased:/);
  // The blocks stay (they protect the service), naming the pseudonym the audit log uses; the
  // lockout of the erased key is gone; another block is untouched.
  expect(rows).toEqual([
    { address: "198.51.100.7", createdBy: pseudonym },
    { address: "198.51.100.8", createdBy: pseudonym },
    { address: "198.51.100.9", createdBy: null },
  ]);
  expect(JSON.stringify(sqlite.query("SELECT * FROM ip_blocks").all())).not.toContain(admin.userId);
});

test("an erasure the file cannot take leaves no trace: the session still works, and the audit events queued meanwhile are written", async () => {
  current = buildTestApp({ env: { RATE_LIMIT_PER_MINUTE: "10000", RATE_LIMIT_BURST: "10000" } });
  const user = await signUp(current);
  const sqlite = current.db.$client;
  // Queued (batched) before the erasure: another client's refused CSRF check.
  current.services.audit.record({ type: "csrf.failed", outcome: "denied", ip: "192.0.2.61" });
  // A full disk at the erasure's last write: its transaction rolls back whole.
  sqlite.run(
    "CREATE TRIGGER full_disk BEFORE DELETE ON users BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
  );
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(user.accessToken),
  });
  expect(erased.status).toBeGreaterThanOrEqual(500);
  sqlite.run("DROP TRIGGER full_disk");
  // Nothing of it stayed: not the revocation it read back inside its transaction, here or in the file.
  expect((await send(current, "/api/auth/me", { headers: bearer(user.accessToken) })).status).toBe(
    200,
  );
  expect(sqlite.query("SELECT count(*) AS n FROM auth_revocations").get()).toEqual({ n: 0 });
  // The event queued before it was flushed inside its transaction: queued again, then written.
  current.services.audit.flush();
  const types = sqlite.query("SELECT type FROM audit_events").values().flat();
  expect(types).toContain("csrf.failed");
  expect(current.logs.text).toContain("audit events queued again");
});

test("what a rolled-back transaction leaves to check runs after a command that closes the file at once without an error", async () => {
  const target = buildTestApp();
  const sqlite = target.db.$client;
  target.services.audit.record({ type: "csrf.failed", outcome: "denied", ip: "192.0.2.62" });
  // As a failed `users:erase` does: a revocation and an audit flush inside a transaction that
  // rolls back, then the command ends and closes the database before the next tick.
  expect(() =>
    sqlite.transaction(() => {
      target.services.credentials.revoke("family", "f-rolled-back");
      target.services.audit.flush();
      throw new Error("database or disk is full");
    })(),
  ).toThrow("database or disk is full");
  target.close();
  await Bun.sleep(10);
  expect(target.logs.text).toContain("audit rows unconfirmed: the database closed first");
});

test("an erasure that commits writes the user's queued events once, pseudonymised, and nothing is queued again", async () => {
  const target = buildTestApp();
  current = target;
  const user = await signUp(target);
  target.services.audit.record({
    type: "ratelimit.rejected",
    outcome: "denied",
    actor: `user:${user.userId}`,
    ip: "192.0.2.63",
  });
  const erased = await send(target, "/api/me", {
    method: "DELETE",
    headers: bearer(user.accessToken),
  });
  expect(erased.status).toBe(204);
  await Bun.sleep(5);
  target.services.audit.flush();
  const rows = target.db.$client
    .query("SELECT actor FROM audit_events WHERE type = 'ratelimit.rejected'")
    .all() as { actor: string }[];
  expect(rows).toHaveLength(1);
  expect(rows[0]!.actor).not.toContain(user.userId);
  expect(target.logs.text).not.toContain("queued again");
});

/** A rate-limit refusal of `actor` from `ip`: a batched event. */
function refusal(actor: string, ip: string) {
  return { type: "ratelimit.rejected", outcome: "denied", actor, ip } as const;
}

async function eraseOwnAccount(target: TestApp, accessToken: string) {
  const erased = await send(target, "/api/me", { method: "DELETE", headers: bearer(accessToken) });
  expect(erased.status).toBe(204);
}

/** A second process's audit log on the same file: its own connection, its own queue. */
function otherProcessLog(target: TestApp, keys = new AuditKeys(target.config.audit.secretKey)) {
  const logs = new LogCapture();
  const connection = openDatabase(target.databasePath);
  const log = new SqliteAuditLog({
    sqlite: connection.$client,
    clock: systemClock,
    logger: createLogger({ level: "info", destination: logs }),
    keys,
    flushIntervalMs: 60_000,
  });
  return {
    log,
    logs,
    close() {
      log.close();
      connection.$client.close();
    },
  };
}

test("what another process queued for the user before the erasure, or records after it, is written under the pseudonym without its address", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const keyId = createKey(current, ["chat"], alice.userId).record.id;
  const other = otherProcessLog(current);
  try {
    // Queued there (batched) before the erasure: refusals of the user and of the user's key.
    other.log.record(refusal(`user:${alice.userId}`, "192.0.2.70"));
    other.log.record(refusal(`key:${keyId}`, "192.0.2.71"));
    other.log.record(refusal(`user:${bob.userId}`, "192.0.2.72"));
    // And an event there naming the user in its detail (probe 26c F2).
    other.log.record({
      type: "chat.usage.reset",
      outcome: "success",
      actor: `user:${bob.userId}`,
      ip: "192.0.2.74",
      detail: { principal: `user:${alice.userId}`, day: "2026-01-01" },
    });
    await eraseOwnAccount(current, alice.accessToken);
    other.log.flush();
    // Recorded there after it by a request that was already under way: written at once.
    other.log.record({
      type: "auth.forbidden",
      outcome: "denied",
      actor: `user:${alice.userId}`,
      ip: "192.0.2.73",
    });
    // An admin event there naming the key, recorded after it (written at once).
    other.log.record({
      type: "admin.key.revoked",
      outcome: "success",
      actor: `user:${bob.userId}`,
      detail: { keyId, name: "alice's laptop" },
    });

    const sqlite = current.db.$client;
    const pseudonym = (
      sqlite.query("SELECT actor FROM audit_events WHERE type = 'privacy.erased'").get() as {
        actor: string;
      }
    ).actor;
    const dump = JSON.stringify(sqlite.query("SELECT actor, ip, detail FROM audit_events").all());
    expect(dump).not.toContain(alice.userId);
    expect(dump).not.toContain(keyId);
    expect(dump).not.toContain("alice's laptop");
    const actors = sqlite.query("SELECT actor FROM audit_events").values().flat();
    expect(actors).not.toContain(`key:${keyId}`);
    for (const ip of ["192.0.2.70", "192.0.2.71", "192.0.2.73"]) expect(dump).not.toContain(ip);
    const late = sqlite
      .query(
        "SELECT type, actor, ip FROM audit_events WHERE id > (SELECT id FROM audit_events WHERE type = 'privacy.erased') ORDER BY id",
      )
      .all();
    expect(late).toEqual([
      { type: "ratelimit.rejected", actor: pseudonym, ip: null },
      { type: "ratelimit.rejected", actor: pseudonym, ip: null },
      { type: "ratelimit.rejected", actor: `user:${bob.userId}`, ip: "192.0.2.72" },
      { type: "chat.usage.reset", actor: `user:${bob.userId}`, ip: "192.0.2.74" },
      { type: "auth.forbidden", actor: pseudonym, ip: null },
      { type: "admin.key.revoked", actor: `user:${bob.userId}`, ip: null },
    ]);
    const named = sqlite
      .query(
        "SELECT detail FROM audit_events WHERE type IN ('chat.usage.reset', 'admin.key.revoked') AND actor = ? ORDER BY id",
      )
      .values(`user:${bob.userId}`)
      .flat()
      .map((detail) => JSON.parse(detail as string));
    expect(named).toEqual([
      { day: "2026-01-01", principal: pseudonym },
      { keyId: pseudonym, name: null },
    ]);
    expect(verifyAuditChain(sqlite, new AuditKeys(current.config.audit.secretKey)).ok).toBe(true);
    // No personal data in the record of who was erased: keyed pseudonyms only.
    const erasedActors = JSON.stringify(sqlite.query("SELECT * FROM audit_erased_actors").all());
    expect(erasedActors).not.toContain(alice.userId);
    expect(erasedActors).not.toContain(keyId);
    expect(other.logs.text).toContain("written under its pseudonym");
    expect(other.logs.text).not.toContain(alice.userId);
  } finally {
    other.close();
  }
});

test("a record of erasure written into the file without AUDIT_SECRET_KEY changes no living actor's rows", async () => {
  current = buildTestApp();
  const bob = await signUp(current);
  const sqlite = current.db.$client;
  const insert = sqlite.query(
    "INSERT INTO audit_erased_actors (actor_key, pseudonym, erased_at, mac) VALUES (?1, 'erased:forged', 0, 'forged')",
  );
  // The actor itself, and its pseudonym under a key other than the service's.
  insert.run(`user:${bob.userId}`);
  insert.run(
    new AuditKeys("another-secret-0123456789abcdefghijklmnop").pseudonym(`user:${bob.userId}`),
  );
  const other = otherProcessLog(current);
  try {
    other.log.record({
      type: "auth.forbidden",
      outcome: "denied",
      actor: `user:${bob.userId}`,
      ip: "192.0.2.74",
    });
  } finally {
    other.close();
  }
  expect(
    sqlite.query("SELECT actor, ip FROM audit_events WHERE type = 'auth.forbidden'").all(),
  ).toEqual([{ actor: `user:${bob.userId}`, ip: "192.0.2.74" }]);
});

test("an erased actor's pseudonym rewritten in the file, to name a living user or another erased one, is not written: the actor's own pseudonym is", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const carol = await signUp(current);
  await eraseOwnAccount(current, carol.accessToken);
  const keys = new AuditKeys(current.config.audit.secretKey);
  const forgeries = [`user:${bob.userId}`, keys.pseudonym(`user:${carol.userId}`)];
  const other = otherProcessLog(current);
  try {
    other.log.record(refusal(`user:${alice.userId}`, "192.0.2.75"));
    await eraseOwnAccount(current, alice.accessToken);
    for (const forged of forgeries) {
      current.db.$client.run("UPDATE audit_erased_actors SET pseudonym = ?1 WHERE actor_key = ?2", [
        forged,
        keys.pseudonym(`user:${alice.userId}`),
      ]);
      other.log.flush();
      other.log.record(refusal(`user:${alice.userId}`, "192.0.2.76"));
    }
    other.log.flush();
  } finally {
    other.close();
  }
  const own = { actor: keys.pseudonym(`user:${alice.userId}`), ip: null };
  expect(
    current.db.$client
      .query("SELECT actor, ip FROM audit_events WHERE type = 'ratelimit.rejected'")
      .all(),
  ).toEqual([own, own, own]);
});

test("the refusals an erased user's token earns after the erasure (where it is still accepted for a second) lock nothing out: no block keeps the id", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  await eraseOwnAccount(current, alice.accessToken);
  const { ipBlocks } = current.services;
  const lockouts: unknown[] = [];
  for (let refusal = 0; refusal < 6; refusal++) {
    lockouts.push(await ipBlocks.recordPrincipalViolation(`user:${alice.userId}`));
    lockouts.push(await ipBlocks.recordPrincipalViolation(`user:${bob.userId}`));
  }
  const addresses = current.db.$client.query("SELECT address FROM ip_blocks").values().flat();
  // Bob, who stands, is locked out as before.
  expect(addresses).toEqual([`user:${bob.userId}`]);
  expect(lockouts.filter((lockout) => lockout !== null)).toHaveLength(1);
});

test("an erased admin's token or key, still accepted for a second by a process not yet told, makes no block: 401, no row keeps the id", async () => {
  current = buildTestApp();
  const admin = await signUp(current, { role: "admin" });
  const { key, record } = createKey(current, ["admin"], admin.userId);
  const other = untoldInstance(current);
  try {
    const blockFrom = (headers: Record<string, string>, address: string) =>
      send(other, "/api/admin/blocks", {
        headers,
        body: { address, ttlMinutes: 60, reason: "spam" },
      });
    expect((await blockFrom(bearer(admin.accessToken), "198.51.100.20")).status).toBe(201);
    expect((await blockFrom({ "x-api-key": key }, "198.51.100.21")).status).toBe(201);
    await eraseOwnAccount(current, admin.accessToken);
    // What the account feature holds decides, not the audit log's record of erasures, which
    // someone with the file could delete.
    current.db.$client.run("DELETE FROM audit_erased_actors");
    for (const [headers, address] of [
      [bearer(admin.accessToken), "198.51.100.22"],
      [{ "x-api-key": key }, "198.51.100.23"],
    ] as const) {
      const late = await blockFrom(headers, address);
      expect(late.status).toBe(401);
      expect(((await late.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
    }
  } finally {
    other.close();
  }
  const rows = current.db.$client.query("SELECT address, created_by FROM ip_blocks").all();
  expect(rows).toHaveLength(2);
  expect(JSON.stringify(rows)).not.toContain(admin.userId);
  expect(JSON.stringify(rows)).not.toContain(record.id);
});

test("the limiter's counts under the person's names are exported, and go with the erasure: their principals' and their address's failed logins", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const { key } = createKey(current, ["chat"], alice.userId);
  // Counted per principal (her token, her key), and a failed login on her address from elsewhere.
  expect((await send(current, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    200,
  );
  expect((await send(current, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(200);
  const failed = await send(current, "/api/auth/login", {
    body: { email: alice.email.toUpperCase(), password: "not-her-password-1!" },
    peer: "198.51.100.77",
  });
  expect(failed.status).toBe(401);
  const sqlite = current.db.$client;
  const heldKeys = () =>
    (
      sqlite
        .query(
          "SELECT DISTINCT key FROM rate_limit_counters WHERE key NOT LIKE 'ip:%' AND key NOT GLOB '[0-9]*'",
        )
        .all() as { key: string }[]
    ).map((row) => row.key.split(":")[0]);
  expect(new Set(heldKeys())).toEqual(new Set(["user", "key", "account"]));
  const exported = (await (
    await send(current, "/api/me/export", { headers: bearer(alice.accessToken) })
  ).json()) as { rateLimits: { policy: string; current: number }[] };
  expect(exported.rateLimits.map((row) => row.policy)).toContain("lockout");
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
  });
  expect(erased.status).toBe(204);
  expect(heldKeys()).toEqual([]);
});

test("the export and the erasure find the person's limiter counts and blocks by seeks, never by reading every client's counter (a row per client of the last two windows) or every block", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const sqlite = current.db.$client;
  // Other clients' counters, in the policies hers are in.
  sqlite.run(
    `WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 2000)
     INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
       burst_window_start, burst_current, burst_previous, admitted, expires_at)
     SELECT p.policy, '198.18.' || (k / 250) || '.' || (k % 250), 0, 1, 0, 0, 0, 0, 1, 9e15
     FROM n, (SELECT DISTINCT policy FROM rate_limit_counters) AS p`,
  );
  await send(current, "/api/auth/me", { headers: bearer(alice.accessToken) });
  const statements = await statementsPrepared(sqlite, async () => {
    const exported = await send(current!, "/api/me/export", { headers: bearer(alice.accessToken) });
    expect(exported.status).toBe(200);
    await exported.text();
    const erased = await send(current!, "/api/me", {
      method: "DELETE",
      headers: bearer(alice.accessToken),
    });
    expect(erased.status).toBe(204);
  });
  // And the blocks an admin made, which an erasure renames (probe 88e F1: every block read twice).
  const counters = statements.filter((text) => /rate_limit_counters|ip_blocks/.test(text));
  expect(counters.length).toBeGreaterThanOrEqual(4);
  for (const text of counters) {
    const reads = planOf(sqlite, text).filter(
      (step) =>
        /^SCAN (rate_limit_counters|counter|ip_blocks)\b/.test(step) &&
        !/USING (COVERING )?INDEX ip_blocks_created_by\b/.test(step),
    );
    expect({ text: text.slice(0, 60), reads }).toEqual({ text: text.slice(0, 60), reads: [] });
  }
  // Hers went, the others' stayed.
  const left = sqlite
    .query<{ n: number }, []>(
      "SELECT count(*) AS n FROM rate_limit_counters WHERE key LIKE 'user:%'",
    )
    .get()!.n;
  expect(left).toBe(0);
  expect(
    sqlite
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM rate_limit_counters WHERE key LIKE '198.18.%'",
      )
      .get()!.n,
  ).toBeGreaterThanOrEqual(2000);
});

test("an account set aside by the address upgrade (no address key) erases no other account's failed-login count (probe 19e F3)", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const sqlite = current.db.$client;
  // Bob's row as the upgrade leaves a colliding account: alice's address, no key of its own.
  sqlite.run("UPDATE users SET email = ?, email_key = NULL WHERE id = ?", [
    alice.email,
    bob.userId,
  ]);
  const failed = await send(current, "/api/auth/login", {
    body: { email: alice.email, password: "not-her-password-1!" },
    peer: "198.51.100.78",
  });
  expect(failed.status).toBe(401);
  const accountRows = () =>
    sqlite
      .query(
        "SELECT policy, key, current FROM rate_limit_counters WHERE key LIKE 'account:%' ORDER BY policy, key",
      )
      .all();
  const before = accountRows();
  expect(before.length).toBeGreaterThan(0);
  expect(
    await current.services.privacy.erase(bob.userId, { ip: null, requestId: null, by: "operator" }),
  ).toBe(true);
  expect(accountRows()).toEqual(before);
});

test("a key an admin rotated is exported with its successor withheld, the admin's key; a key rotated by its own owner names its successor (probe 32d F3)", async () => {
  current = buildTestApp();
  const user = await signUp(current);
  const admin = await signUp(current, { role: "admin" });
  const usersKey = createKey(current, ["chat"], user.userId);
  const adminsKey = createKey(current, ["chat"], admin.userId);
  const rotate = async (id: string) => {
    const response = await send(current!, `/api/admin/api-keys/${id}/rotate`, {
      body: { graceMinutes: 1 },
      headers: bearer(admin.accessToken),
    });
    expect(response.status).toBe(201);
    return ((await response.json()) as { apiKey: { id: string } }).apiKey.id;
  };
  const adminsSuccessorOfUsers = await rotate(usersKey.record.id);
  const adminsOwnSuccessor = await rotate(adminsKey.record.id);
  const keysExported = async (who: { accessToken: string }) => {
    const response = await send(current!, "/api/me/export", { headers: bearer(who.accessToken) });
    expect(response.status).toBe(200);
    return ((await response.json()) as { apiKeys: { id: string; replacedBy: string | null }[] })
      .apiKeys;
  };
  const usersKeys = await keysExported(user);
  expect(usersKeys).toEqual([
    expect.objectContaining({ id: usersKey.record.id, replacedBy: "(another principal)" }),
  ]);
  expect(JSON.stringify(usersKeys)).not.toContain(adminsSuccessorOfUsers);
  const adminsKeys = await keysExported(admin);
  expect(adminsKeys.find((key) => key.id === adminsKey.record.id)?.replacedBy).toBe(
    adminsOwnSuccessor,
  );
});

test("others' events that name the user (a key made for them, an admin's rotation of it and look-up of their usage) are in the export, without that actor or its address (probe 38b F3)", async () => {
  current = buildTestApp();
  const user = await signUp(current);
  const admin = await signUp(current, { role: "admin" });
  const adminPeer = "203.0.113.77";
  const made = current.services.apiKeys.create(
    { name: "for the user", scopes: ["chat"], userId: user.userId },
    "cli",
  );
  const rotated = await send(current, `/api/admin/api-keys/${made.record.id}/rotate`, {
    body: {},
    headers: bearer(admin.accessToken),
    peer: adminPeer,
  });
  expect(rotated.status).toBe(201);
  const lookUp = await send(current, `/api/admin/usage?principal=user:${user.userId}`, {
    headers: bearer(admin.accessToken),
    peer: adminPeer,
  });
  expect(lookUp.status).toBe(200);

  const response = await send(current, "/api/me/export", { headers: bearer(user.accessToken) });
  expect(response.status).toBe(200);
  const { auditEvents } = (await response.json()) as {
    auditEvents: { type: string; actor: string | null; ip: string | null; detail: unknown }[];
  };
  const byOthers = auditEvents.filter((event) => event.actor !== `user:${user.userId}`);
  // Grouped by the name they give (the user's, then each key's), each group in the order written.
  expect(
    byOthers
      .map(({ type, actor, ip }) => ({ type, actor, ip }))
      .sort((a, b) => a.type.localeCompare(b.type)),
  ).toEqual([
    { type: "admin.key.created", actor: "cli", ip: null },
    { type: "admin.key.rotated", actor: "(another principal)", ip: null },
    { type: "admin.usage.queried", actor: "(another principal)", ip: null },
  ]);
  const shown = JSON.stringify(auditEvents);
  expect(shown).toContain(made.record.id);
  expect(shown).not.toContain(admin.userId);
  expect(shown).not.toContain(adminPeer);
  // The user's own rows name the user, as before.
  expect(auditEvents.some((event) => event.actor === `user:${user.userId}`)).toBe(true);
});

test("the last admin erasing itself is erased, and the record and the log say no admin is left; an admin with another left says nothing (probe 38b F5)", async () => {
  current = buildTestApp();
  const first = await signUp(current, { role: "admin" });
  const last = await signUp(current, { role: "admin" });
  const erase = async (who: { accessToken: string }) => {
    const response = await send(current!, "/api/me", {
      method: "DELETE",
      headers: bearer(who.accessToken),
    });
    expect(response.status).toBe(204);
  };
  const erasures = () => {
    current!.services.audit.flush();
    return current!.db.$client
      .query("SELECT detail FROM audit_events WHERE type = 'privacy.erased' ORDER BY id")
      .all()
      .map((row) => (row as { detail: string | null }).detail);
  };
  const warned = () =>
    current!.logs.entries.filter((entry) => String(entry.msg).includes("last admin account"));
  await erase(first);
  expect(erasures()).toEqual(["{}"]);
  expect(warned()).toEqual([]);
  await erase(last);
  expect(JSON.parse(erasures()[1]!)).toEqual({ noAdminLeft: "true" });
  expect(warned()).toHaveLength(1);
  expect(warned()[0]!.level).toBe("warn");
});

test("with the file but not the secrets: another user's audit rows and sessions moved to you in the file are not in your export (probe 38b F6)", async () => {
  current = buildTestApp();
  const victimPeer = "203.0.113.201";
  const victim = await signUp(current, { peer: victimPeer });
  const mallory = await signUp(current);
  current.services.audit.flush();
  const db = current.db.$client;
  db.query("UPDATE audit_events SET actor = ? WHERE actor = ?").run(
    `user:${mallory.userId}`,
    `user:${victim.userId}`,
  );
  db.query("UPDATE refresh_families SET user_id = ? WHERE user_id = ?").run(
    mallory.userId,
    victim.userId,
  );
  const response = await send(current, "/api/me/export", { headers: bearer(mallory.accessToken) });
  expect(response.status).toBe(200);
  const document = (await response.json()) as {
    sessions: { familyId: string }[];
    auditEvents: { ip: string | null }[];
  };
  const text = JSON.stringify(document);
  expect(text).not.toContain(victimPeer);
  expect(document.sessions).toHaveLength(1);
  // Mallory's own rows are there as they were.
  expect(document.auditEvents.length).toBeGreaterThan(0);
});

test("an erasure revokes every one of a user's many keys, each refused at once, cached ones too (probe 39a F2: revoked together)", async () => {
  current = buildTestApp();
  const user = await signUp(current);
  const keys = Array.from({ length: 60 }, () => createKey(current!, ["chat"], user.userId));
  // Cached in this process before the erasure.
  for (const { key } of keys.slice(0, 5)) {
    expect((await send(current, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(
      200,
    );
  }
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(user.accessToken),
  });
  expect(erased.status).toBe(204);
  const active = current.db.$client
    .query("SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL")
    .get() as { n: number };
  expect(active.n).toBe(0);
  for (const { key } of [...keys.slice(0, 5), keys.at(-1)!]) {
    expect((await send(current, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(
      401,
    );
  }
});

test("a key listed under the user whose row was edited in the file (revoked_at set by hand) is reported at the erasure, not left in silence (probe 39a F6)", async () => {
  current = buildTestApp();
  const user = await signUp(current);
  const { record } = createKey(current, ["chat"], user.userId);
  current.db.$client.query("UPDATE api_keys SET revoked_at = 1 WHERE id = ?").run(record.id);
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(user.accessToken),
  });
  expect(erased.status).toBe(204);
  current.services.audit.flush();
  const reported = current.db.$client
    .query("SELECT detail FROM audit_events WHERE type = 'auth.credential_tampered'")
    .all()
    .map((row) => JSON.parse((row as { detail: string }).detail) as { id: string });
  expect(reported.map((detail) => detail.id)).toContain(record.id);
});

test("a long audit history is exported a page at a time, each event once and in order (probe 39a F1)", async () => {
  current = buildTestApp();
  const user = await signUp(current);
  for (let i = 0; i < 1_200; i++) {
    current.services.audit.record({
      type: "auth.login.succeeded",
      outcome: "success",
      actor: `user:${user.userId}`,
      ip: "192.0.2.9",
    });
  }
  current.services.audit.flush();
  const pieces = [...current.services.privacy.exportText(user.userId)!];
  const start = pieces.findIndex((piece) => piece.endsWith('"auditEvents":'));
  const auditPieces = pieces.slice(start + 1, pieces.indexOf("]", start + 1));
  expect(auditPieces.filter((piece) => piece.length > 0).length).toBeGreaterThanOrEqual(3);
  const { auditEvents } = JSON.parse(pieces.join("")) as { auditEvents: { id: number }[] };
  expect(auditEvents.length).toBeGreaterThanOrEqual(1_200);
  const ids = auditEvents.map((event) => event.id);
  expect(ids).toEqual([...ids].sort((a, b) => a - b));
  expect(new Set(ids).size).toBe(ids.length);
});

test("with the file: a names-index row pointing another's event at the user brings it into no export (probe 39a F5)", async () => {
  current = buildTestApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const admin = await signUp(current, { role: "admin" });
  const lookUp = await send(current, `/api/admin/usage?principal=user:${alice.userId}`, {
    headers: bearer(admin.accessToken),
  });
  expect(lookUp.status).toBe(200);
  current.services.audit.flush();
  const db = current.db.$client;
  const event = db
    .query("SELECT id FROM audit_events WHERE type = 'admin.usage.queried'")
    .get() as { id: number };
  db.query("INSERT INTO audit_event_names (name, event_id) VALUES (?, ?)").run(
    `user:${bob.userId}`,
    event.id,
  );
  const exported = (await (
    await send(current, "/api/me/export", { headers: bearer(bob.accessToken) })
  ).json()) as { auditEvents: { id: number }[] };
  expect(exported.auditEvents.map((e) => e.id)).not.toContain(event.id);
  // Alice, whom it names, has it.
  const alices = (await (
    await send(current, "/api/me/export", { headers: bearer(alice.accessToken) })
  ).json()) as { auditEvents: { id: number }[] };
  expect(alices.auditEvents.map((e) => e.id)).toContain(event.id);
});

describe("erasing a long audit history (probe 40a F3)", () => {
  /** `n` events by the user, and `n / 10` of an admin's naming the user, written now. */
  const history = (target: TestApp, userId: string, n: number) => {
    for (let i = 0; i < n; i++) {
      target.services.audit.record({
        type: "auth.login.succeeded",
        outcome: "success",
        actor: `user:${userId}`,
        ip: "192.0.2.9",
      });
      if (i % 10 === 0) {
        target.services.audit.record({
          type: "admin.usage.queried",
          outcome: "success",
          actor: "cli",
          detail: { principal: `user:${userId}`, day: "2026-01-01" },
        });
      }
    }
    target.services.audit.flush();
  };
  /**
   * Maintenance runs, with time between them for the parts they start (a stopped erasure is
   * finished a part every 10 ms), until `userId`'s rows are all rewritten or `runs` have passed.
   */
  const maintainUntilErased = async (
    maintained: Pick<TestApp, "services">,
    observed: TestApp,
    userId: string,
    runs = 20,
  ) => {
    for (let run = 0; run < runs; run++) {
      maintained.services.runMaintenance();
      await Bun.sleep(25);
      const left = leftOf(observed, userId);
      // The part that found nothing left (and says so) comes after the last that rewrote.
      if (left.own + left.named + left.names === 0) return await Bun.sleep(50);
    }
  };
  /** A test app with a user of `n` events (and an admin's naming them), and the user's row ids. */
  const withHistory = async (n: number) => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    history(target, user.userId, n);
    const sqlite = target.db.$client;
    const ids = sqlite
      .query("SELECT id FROM audit_events WHERE actor = ? ORDER BY id")
      .all(`user:${user.userId}`) as { id: number }[];
    return { target, user, sqlite, ids };
  };
  const leftOf = (target: TestApp, userId: string) => {
    const sqlite = target.db.$client;
    const raw = `user:${userId}`;
    return {
      own: (
        sqlite.query("SELECT count(*) AS n FROM audit_events WHERE actor = ?").get(raw) as {
          n: number;
        }
      ).n,
      named: (
        sqlite
          .query("SELECT count(*) AS n FROM audit_events WHERE detail LIKE ?")
          .get(`%${raw}%`) as { n: number }
      ).n,
      names: (
        sqlite.query("SELECT count(*) AS n FROM audit_event_names WHERE name = ?").get(raw) as {
          n: number;
        }
      ).n,
    };
  };

  test("other requests are answered while it runs; once it answers 204 no row keeps the id, and the chain verifies", async () => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    history(target, user.userId, 4_000);
    expect(leftOf(target, user.userId).own).toBeGreaterThan(4_000);
    const before = leftOf(target, user.userId).own;
    // Requests asked while it runs are answered while it runs, between two of its parts, each
    // seeing the history part-rewritten; one transaction over the whole history held every
    // request until the last row was rewritten, so each saw all of it or none.
    // The maintenance running meanwhile (its first scan after a start, once the erasure is under
    // way) leaves this process's own erasure to it, and says nothing of it.
    const seen: number[] = [];
    const recorded = () =>
      (
        target.db.$client
          .query("SELECT count(*) AS n FROM audit_events WHERE type = 'privacy.erased'")
          .get() as { n: number }
      ).n;
    let recordedMidway = false;
    const erasure = eraseWatching(target, bearer(user.accessToken), () => {
      const left = leftOf(target, user.userId).own;
      seen.push(left);
      if (left > 0 && left < before) {
        target.services.runMaintenance();
        // The record is written once the account is gone, before the rest: a process stopped
        // during the rest must not take it with it (probe 41b F2).
        recordedMidway ||= recorded() === 1;
      }
    });
    expect((await erasure).status).toBe(204);
    expect(seen.some((left) => left > 0 && left < before)).toBe(true);
    expect(recordedMidway).toBe(true);
    expect(recorded()).toBe(1);
    expect(target.logs.text).not.toContain("an erasure stopped part-way");
    expect(leftOf(target, user.userId)).toEqual({ own: 0, named: 0, names: 0 });
    const sqlite = target.db.$client;
    expect(
      (
        sqlite
          .query(
            "SELECT count(*) AS n FROM audit_events WHERE actor LIKE 'erased:%' AND ip IS NULL",
          )
          .get() as { n: number }
      ).n,
    ).toBeGreaterThan(4_000);
    expect(verifyAuditChain(sqlite, new AuditKeys(target.config.audit.secretKey)).ok).toBe(true);
  });

  test("a user's many API keys are revoked ahead of the erasure's transaction, a part at a time: requests between parts see them part-revoked with the account still there; then every key is refused (probe 41b F5)", async () => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    const keys = Array.from({ length: 3 * KEYS_AHEAD_PART }, () =>
      createKey(target, ["chat"], user.userId),
    );
    const sqlite = target.db.$client;
    const revoked = () =>
      (
        sqlite
          .query("SELECT count(*) AS n FROM api_keys WHERE user_id = ? AND revoked_at IS NOT NULL")
          .get(user.userId) as { n: number }
      ).n;
    // Made ahead, while the account stands, by the user: the pseudonym is nowhere beside the
    // living account's key ids (probe 42a F2); the erasure then rewrites these rows too.
    const pseudonym = target.services.audit.pseudonymOf(`user:${user.userId}`);
    const revokers = () =>
      (
        sqlite
          .query(
            "SELECT DISTINCT actor FROM audit_events WHERE type = 'admin.key.revoked' ORDER BY actor",
          )
          .all() as { actor: string }[]
      ).map((row) => row.actor);
    let seenPartway = false;
    const erasure = eraseWatching(target, bearer(user.accessToken), () => {
      const now = revoked();
      if (now > 0 && now < keys.length) {
        seenPartway = true;
        target.services.audit.flush();
        expect(revokers()).toEqual([`user:${user.userId}`]);
      }
    });
    expect((await erasure).status).toBe(204);
    // In the erasure's transaction, every request saw none revoked or the account gone.
    expect(seenPartway).toBe(true);
    expect(revokers()).toEqual([pseudonym]);
    expect(
      (
        sqlite
          .query("SELECT count(*) AS n FROM audit_events WHERE detail LIKE ?")
          .get(`%${keys[0]!.record.id}%`) as { n: number }
      ).n,
    ).toBe(0);
    expect(
      (
        sqlite
          .query("SELECT count(*) AS n FROM audit_events WHERE type = 'admin.key.revoked'")
          .get() as { n: number }
      ).n,
    ).toBe(keys.length);
    for (const { key } of [keys[0]!, keys.at(-1)!]) {
      const asked = await send(target, "/api/chat/conversations", {
        headers: { "x-api-key": key },
      });
      expect(asked.status).toBe(401);
    }
  });

  test("a part of the rest goes on to the user's next key while it has rows to spare: 600 keys with a few rows each take a handful of parts, not one a key", async () => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    const { audit } = target.services;
    const keyActors = Array.from({ length: 600 }, () => {
      const actor = `key:${createKey(target, ["chat"], user.userId).record.id}`;
      for (let i = 0; i < 2; i++) {
        audit.record({ type: "auth.login.succeeded", outcome: "success", actor });
      }
      return actor;
    });
    history(target, user.userId, 40);
    const sqlite = target.db.$client;
    const rowsOf = (actors: string[]) =>
      actors.reduce(
        (sum, actor) =>
          sum +
          (
            sqlite.query("SELECT count(*) AS n FROM audit_events WHERE actor = ?").get(actor) as {
              n: number;
            }
          ).n,
        0,
      );
    const actors = [`user:${user.userId}`, ...keyActors];
    expect(rowsOf(actors)).toBeGreaterThan(1_200);
    const contributor = auditEventsContributor({ db: target.db, audit });
    const context = {
      pseudonym: audit.pseudonymOf(actors[0]!),
      actors,
      requestId: null,
      requestedBy: actors[0]!,
    };
    sqlite.transaction(() => contributor.erase(user.userId, context)).immediate();
    const part = contributor.eraseRest!(user.userId, context);
    let parts = 1;
    while (!part()) parts++;
    // ~1,240 own rows and the rows naming the keys (their creation), 250 a part: one key a part
    // took 601.
    expect(parts).toBeLessThanOrEqual(Math.ceil((1_240 + 600) / ERASURE_PART_ROWS) + 1);
    expect(rowsOf(actors)).toBe(0);
    expect(verifyAuditChain(sqlite, new AuditKeys(target.config.audit.secretKey)).ok).toBe(true);
  });

  /**
   * A user with `keys` API keys, each with an audit row of its own, whose erasure recorded each
   * actor and then stopped (none of their rows rewritten); and a finisher of stopped erasures on
   * the app's log, driven by the test (`run`, `close`).
   */
  const stoppedErasureOfKeys = async (keys: number) => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    const { audit } = target.services;
    const keyActors = Array.from({ length: keys }, () => {
      const actor = `key:${createKey(target, ["chat"], user.userId).record.id}`;
      audit.record({ type: "auth.login.succeeded", outcome: "success", actor });
      return actor;
    });
    audit.flush();
    const actors = [`user:${user.userId}`, ...keyActors];
    const pseudonym = audit.pseudonymOf(actors[0]!);
    const erasedAt = Date.now();
    for (const actor of actors) audit.pseudonymiseSome(actor, pseudonym, 0);
    const sqlite = target.db.$client;
    return {
      target,
      user,
      actors,
      erasedAt,
      /** The keys' own rows, and their names in others' rows, not yet rewritten. */
      left: () =>
        (
          sqlite
            .query(
              "SELECT (SELECT count(*) FROM audit_events WHERE actor LIKE 'key:%') + (SELECT count(*) FROM audit_event_names WHERE name LIKE 'key:%') AS n",
            )
            .get() as { n: number }
        ).n,
      /** The keys' own rows not yet rewritten. */
      own: () =>
        (
          sqlite.query("SELECT count(*) AS n FROM audit_events WHERE actor LIKE 'key:%'").get() as {
            n: number;
          }
        ).n,
      said: () => target.logs.text.split("an erasure stopped part-way was finished").length - 1,
      finishing: new ErasureResumption(audit, target.logger, (part) =>
        sqlite.transaction(part).immediate(),
      ),
    };
  };

  test("finishing a stopped erasure, a part goes on to the next key's rows too: 600 keys with a row each take a few parts, said once", async () => {
    const { target, user, actors, own, said, finishing } = await stoppedErasureOfKeys(600);
    expect(own()).toBe(600);
    finishing.rescan(actors);
    // One run finds them; each run after it (its timer stopped) does one part.
    const onePart = () => {
      finishing.run(Date.now());
      finishing.close();
    };
    onePart();
    onePart();
    // One key a part left 599.
    expect(own()).toBeLessThan(500);
    let parts = 1;
    while (own() > 0 && parts < 50) {
      onePart();
      parts++;
    }
    expect(parts).toBeLessThanOrEqual(10);
    onePart();
    expect(own()).toBe(0);
    expect(said()).toBe(1);
    expect(target.logs.text).not.toContain(user.userId);
  });

  test("finishing a stopped erasure whose actors take the look through the log several runs to find, it is said once, when all of it is done (probe 42b F1)", async () => {
    // More actors than one run of the look reads (2,000), each with a row of its own.
    const { actors, left, said, finishing } = await stoppedErasureOfKeys(2_100);
    finishing.rescan(actors);
    // A maintenance run every 10 s, the parts every 20 ms between them: what a run found is
    // finished before the next run looks further.
    const before = left();
    let runs = 0;
    while ((left() > 0 || said() === 0) && runs < 20) {
      finishing.run(Date.now());
      runs++;
      // Until its parts stop: what this run found is done.
      for (let last = -1; left() !== last; await Bun.sleep(60)) last = left();
      if (said() > 0) expect(left()).toBe(0);
    }
    finishing.close();
    expect(before).toBeGreaterThan(2_100);
    expect(left()).toBe(0);
    expect(runs).toBeGreaterThan(1);
    expect(said()).toBe(1);
  }, 60_000);

  test("finishing a stopped erasure whose look crosses its first minute (earlier actors passed over as too recent, later ones taken), it is said once, when the earlier are done too (probe 42c F1)", async () => {
    const { erasedAt, left, said, finishing } = await stoppedErasureOfKeys(2_100);
    // A run of the look half a minute after the erasure passes its first 2,000 actors and names
    // over; the runs after it, once the minute is past, take the rest, then look again a minute on.
    const runAt = async (now: number) => {
      finishing.run(now);
      for (let last = -1; left() !== last; await Bun.sleep(60)) last = left();
      if (said() > 0) expect(left()).toBe(0);
    };
    await runAt(erasedAt + 30_000);
    expect(left()).toBeGreaterThan(2_000);
    for (let i = 0; i < 4; i++) await runAt(erasedAt + 70_000 + i * 10_000);
    expect(said()).toBe(0);
    for (let i = 0; i < 6 && (left() > 0 || said() === 0); i++) {
      await runAt(erasedAt + 140_000 + i * 10_000);
    }
    finishing.close();
    expect(left()).toBe(0);
    expect(said()).toBe(1);
  }, 60_000);

  test("an erasure stopped part-way is finished by the next process's maintenance once a minute has passed since it was recorded, and said without the id", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const target = current;
    const user = await signUp(target);
    const other = await signUp(target);
    history(target, user.userId, 3_000);
    history(target, other.userId, 20);
    // Two of the user's keys with events of their own: one erasure, said once (probe 41b F6).
    const keyActors = [1, 2].map((n) => {
      const actor = `key:${createKey(target, ["chat"], user.userId).record.id}`;
      for (let i = 0; i < 50 * n; i++) {
        target.services.audit.record({ type: "auth.login.succeeded", outcome: "success", actor });
      }
      return actor;
    });
    target.services.audit.flush();
    // The erasure's record and its first part, then the process stops: what DELETE /api/me does
    // in its transaction, and the next parts never ran.
    const actor = `user:${user.userId}`;
    const pseudonym = target.services.audit.pseudonymOf(actor);
    expect(target.services.audit.pseudonymiseSome(actor, pseudonym, 1_000)).toBe(1_000);
    for (const keyActor of keyActors)
      target.services.audit.pseudonymiseSome(keyActor, pseudonym, 0);
    expect(leftOf(target, user.userId).own).toBeGreaterThan(1_900);

    // Started again at once: the erasure may still be under way in the process that made it (a
    // long users:erase), which is left to finish it and say so (probe 41e F1); a minute on, it is
    // taken over.
    const next = anotherInstance(target, { clock });
    try {
      for (let run = 0; run < 3; run++) next.services.runMaintenance();
      await Bun.sleep(300);
      expect(leftOf(target, user.userId).own).toBeGreaterThan(1_900);
      clock.advance(60_000);
      await maintainUntilErased(next, target, user.userId);
    } finally {
      next.close();
    }
    expect(leftOf(target, user.userId)).toEqual({ own: 0, named: 0, names: 0 });
    // Nobody else's rows were touched.
    expect(leftOf(target, other.userId).own).toBeGreaterThan(20);
    const sqlite = target.db.$client;
    expect(verifyAuditChain(sqlite, new AuditKeys(target.config.audit.secretKey)).ok).toBe(true);
    const said = next.logs.entries.filter((entry) =>
      String(entry.msg).startsWith("an erasure stopped part-way was finished"),
    );
    expect(said).toHaveLength(1);
    expect(said[0]!.pseudonym).toBe(pseudonym);
    const keyRowsLeft = target.db.$client
      .query(`SELECT count(*) AS n FROM audit_events WHERE actor IN (?, ?)`)
      .get(...keyActors);
    expect(keyRowsLeft).toEqual({ n: 0 });
    expect(next.logs.text).not.toContain(user.userId);
  });

  /**
   * A user of 3,000 events whose erasure another process on the file began (1,000 rewritten) and
   * stopped, after this process's look through the log at its start was over; this process's
   * maintenance has run once since.
   */
  const stoppedByAnother = async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const target = current;
    const user = await signUp(target);
    history(target, user.userId, 3_000);
    for (let run = 0; run < 3; run++) target.services.runMaintenance();
    const actor = `user:${user.userId}`;
    const other = anotherInstance(target, { clock });
    try {
      const pseudonym = other.services.audit.pseudonymOf(actor);
      expect(other.services.audit.pseudonymiseSome(actor, pseudonym, 1_000)).toBe(1_000);
    } finally {
      other.close();
    }
    target.services.runMaintenance();
    return { clock, target, user };
  };

  test("an erasure another process (users:erase) stopped part-way while this one runs is finished here a minute later (probe 41b F1)", async () => {
    const { clock, target, user } = await stoppedByAnother();
    // Its own rest is the other process's for a while.
    clock.advance(30_000);
    target.services.runMaintenance();
    expect(leftOf(target, user.userId).own).toBeGreaterThan(1_900);
    // Another erasure meanwhile does not put the look off (probe 41d: erasures less than a minute
    // apart kept it off for ever).
    const later = await signUp(target);
    expect(
      (await send(target, "/api/me", { method: "DELETE", headers: bearer(later.accessToken) }))
        .status,
    ).toBe(204);
    target.services.runMaintenance();
    clock.advance(30_000);
    await maintainUntilErased(target, target, user.userId);
    expect(leftOf(target, user.userId)).toEqual({ own: 0, named: 0, names: 0 });
    expect(
      target.logs.entries.filter((entry) =>
        String(entry.msg).startsWith("an erasure stopped part-way was finished"),
      ),
    ).toHaveLength(1);
  });

  test("an erasure another process stopped part-way is finished here after a step back of the clock, not once the clock is past the step (probe 83f's class)", async () => {
    const { clock, target, user } = await stoppedByAnother();
    clock.advance(-10 * 60_000);
    await maintainUntilErased(target, target, user.userId);
    expect(leftOf(target, user.userId)).toEqual({ own: 0, named: 0, names: 0 });
  });

  test("with the file: a row whose commitment was written as a BLOB, in the first part or a later one, neither stops the erasure nor breaks audit:verify or the maintenance; it is reported as altered (probe 41b F3)", async () => {
    const { target, user, sqlite, ids } = await withHistory(2_500);
    for (const poisoned of [ids[0]!.id, ids[2_000]!.id]) {
      sqlite.run(
        `UPDATE audit_events SET subject_commit = CAST(subject_commit AS BLOB) WHERE id = ${poisoned}`,
      );
    }
    const erased = await send(target, "/api/me", {
      method: "DELETE",
      headers: bearer(user.accessToken),
    });
    expect(erased.status).toBe(204);
    expect(leftOf(target, user.userId)).toEqual({ own: 0, named: 0, names: 0 });
    target.services.runMaintenance();
    expect(target.logs.text).not.toContain("maintenance failed");
    const verified = verifyAuditChain(sqlite, new AuditKeys(target.config.audit.secretKey));
    expect(verified.ok).toBe(false);
    expect(JSON.stringify(verified)).toContain("altered");
    expect(JSON.stringify(verified)).not.toContain("TypeError");
  });

  test("with the file: an actor or a name written as a BLOB neither stops the look for stopped erasures nor fails the admin's audit listing (probe 41d F1, F2)", async () => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    const other = await signUp(target);
    const admin = await signUp(target, { role: "admin" });
    history(target, user.userId, 2_000);
    history(target, other.userId, 20);
    const sqlite = target.db.$client;
    sqlite.run(
      `UPDATE audit_events SET actor = CAST(actor AS BLOB) WHERE id = (SELECT min(id) FROM audit_events WHERE actor = 'user:${other.userId}')`,
    );
    sqlite.run(
      `UPDATE audit_event_names SET name = CAST(name AS BLOB) WHERE rowid = (SELECT min(rowid) FROM audit_event_names WHERE name = 'user:${other.userId}')`,
    );
    const actor = `user:${user.userId}`;
    const pseudonym = target.services.audit.pseudonymOf(actor);
    expect(target.services.audit.pseudonymiseSome(actor, pseudonym, 1_000)).toBe(1_000);
    // Started two minutes on, past the minute an erasure is left to the process that made it.
    const later = new ManualClock();
    later.advance(120_000);
    const next = anotherInstance(target, { clock: later });
    try {
      await maintainUntilErased(next, target, user.userId);
      expect(next.logs.text).not.toContain("maintenance failed");
    } finally {
      next.close();
    }
    expect(leftOf(target, user.userId)).toEqual({ own: 0, named: 0, names: 0 });
    // Other columns too, each on a row of its own (probe 41e F2).
    const otherRows = sqlite
      .query("SELECT id FROM audit_events WHERE actor = ? ORDER BY id")
      .all(`user:${other.userId}`) as { id: number }[];
    const odd = [
      "type = CAST(type AS BLOB)",
      "ip = CAST(ip AS BLOB)",
      "route = CAST('GET /x' AS BLOB)",
      "request_id = 42",
      "outcome = CAST(outcome AS BLOB)",
      "detail = 'abc'",
      "detail = CAST(detail AS BLOB)",
      "at = CAST(at AS BLOB)",
      "at = 9223372036854775807",
    ];
    odd.forEach((change, i) => {
      sqlite.run(`UPDATE audit_events SET ${change} WHERE id = ${otherRows[i + 1]!.id}`);
    });
    const listed = await send(target, "/api/admin/audit?limit=500", {
      headers: bearer(admin.accessToken),
    });
    expect(listed.status).toBe(200);
    const { events } = (await listed.json()) as { events: { actor: string | null }[] };
    expect(events.some((event) => event.actor === `user:${other.userId}`)).toBe(true);
  });

  test("each part of an erasure's rest has its own wait for a lock: a long rest meeting a lock late is not stopped (probe 41f F1)", async () => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    const logs = new LogCapture();
    let parts = 0;
    const locked = Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" });
    const service = new PrivacyService({
      sqlite: target.db.$client,
      clock: systemClock,
      audit: target.services.audit,
      logger: createLogger({ level: "info", destination: logs }),
      account: {
        find: () => ({}),
        stored: () => true,
        remove: () => {},
      },
      // Parts that take longer in all than a part may wait for a lock, then one kept out once.
      contributors: [
        {
          name: "slow",
          export: () => [],
          erase: () => {},
          eraseRest: () => () => {
            parts++;
            if (parts === 6) throw locked;
            Bun.sleepSync(30);
            return parts === 8;
          },
        },
      ],
      restLockWaitMs: 100,
    });
    expect(await service.erase(user.userId, { ip: null, requestId: null })).toBe(true);
    expect(parts).toBe(8);
    expect(logs.text).not.toContain("an erasure stopped part-way");
  });

  test("the erasure's record is written in its transaction: one that cannot be written leaves the account as it was, to be asked again (probe 42b F2)", async () => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    const { audit } = target.services;
    const record = audit.record.bind(audit);
    let failing = true;
    // What a process stopped right after its erasure committed must not leave: the account gone
    // and no record of its erasure. The record failing stands for the stop.
    audit.record = (event) => {
      if (failing && event.type === "privacy.erased") throw new Error("stopped here");
      record(event);
    };
    const refused = await send(target, "/api/me", {
      method: "DELETE",
      headers: bearer(user.accessToken),
    });
    expect(refused.status).toBe(500);
    const sqlite = target.db.$client;
    expect(sqlite.query("SELECT 1 FROM users WHERE id = ?").get(user.userId)).not.toBeNull();
    failing = false;
    const erased = await send(target, "/api/me", {
      method: "DELETE",
      headers: bearer(user.accessToken),
    });
    expect(erased.status).toBe(204);
    expect(sqlite.query("SELECT 1 FROM users WHERE id = ?").get(user.userId)).toBeNull();
    audit.flush();
    expect(
      sqlite.query("SELECT count(*) AS n FROM audit_events WHERE type = 'privacy.erased'").get(),
    ).toEqual({ n: 1 });
  });

  test("an account another process erased between the check and the write lock is not erased again: false, nothing recorded (probe 41b F7)", async () => {
    current = buildTestApp();
    const target = current;
    const user = await signUp(target);
    let asked = 0;
    const service = new PrivacyService({
      sqlite: target.db.$client,
      clock: systemClock,
      audit: target.services.audit,
      logger: createLogger({ level: "info", destination: new LogCapture() }),
      // Stored when first asked; gone once the write lock is held (the other erasure committed).
      account: {
        find: () => ({}),
        stored: () => ++asked === 1,
        remove: () => {
          throw new Error("an account erased twice");
        },
      },
      contributors: [],
    });
    expect(await service.erase(user.userId, { ip: null, requestId: null, by: "operator" })).toBe(
      false,
    );
    target.services.audit.flush();
    expect(
      target.db.$client
        .query("SELECT count(*) AS n FROM audit_events WHERE type = 'privacy.erased'")
        .get(),
    ).toEqual({ n: 0 });
  });

  test("a part the database refuses after the erasure committed is logged, the account stays erased, and the maintenance finishes the rest", async () => {
    const { target, user, sqlite, ids } = await withHistory(2_500);
    // Refuses the rewrite of the last rows, beyond the erasure's own transaction's part.
    sqlite.run(
      `CREATE TRIGGER refuse_late_rows BEFORE UPDATE ON audit_events WHEN OLD.id > ${ids[2_000]!.id} BEGIN SELECT RAISE(ABORT, 'refused'); END`,
    );
    const erased = await send(target, "/api/me", {
      method: "DELETE",
      headers: bearer(user.accessToken),
    });
    expect(erased.status).toBe(204);
    expect(sqlite.query("SELECT count(*) AS n FROM users WHERE id = ?").get(user.userId)).toEqual({
      n: 0,
    });
    expect(leftOf(target, user.userId).own).toBeGreaterThan(0);
    const stopped = target.logs.entries.filter((entry) =>
      String(entry.msg).startsWith("an erasure stopped part-way: the account is erased"),
    );
    expect(stopped).toHaveLength(1);
    expect(target.logs.text).not.toContain(`user:${user.userId}`);

    sqlite.run("DROP TRIGGER refuse_late_rows");
    await maintainUntilErased(target, target, user.userId);
    expect(leftOf(target, user.userId)).toEqual({ own: 0, named: 0, names: 0 });
    expect(verifyAuditChain(sqlite, new AuditKeys(target.config.audit.secretKey)).ok).toBe(true);
  });
});

describe("an erasure in flight at the stop (probe 83c F2)", () => {
  test("runs its parts back to back and its transaction, and answers before the connections are cut: the account erased, nothing of it left, the rest left to the next start", async () => {
    current = buildTestApp();
    const target = current;
    const alice = await signUp(target);
    const sqlite = target.db.$client;
    // A long history: many parts ahead of the transaction, 20 ms apart.
    sqlite
      .query(
        "INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at) VALUES ('c-long', 'user', ?, 0, 0)",
      )
      .run(alice.userId);
    sqlite.run(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
       INSERT INTO chat_messages (conversation_id, role, content, tokens, created_at)
       SELECT 'c-long', 'user', 'm' || i, 1, i FROM n`,
    );
    const messages = () =>
      (sqlite.query("SELECT count(*) AS n FROM chat_messages").get() as { n: number }).n;
    let answered = null as number | null;
    const erasure = send(target, "/api/me", {
      method: "DELETE",
      headers: bearer(alice.accessToken),
    }).then((response) => {
      answered = response.status;
    });
    // Part-way through the parts ahead when the stop's drain time is up.
    while (messages() === 60_000) await Bun.sleep(5);
    expect(messages()).toBeGreaterThan(0);
    await target.services.endInFlight();
    // Answered within the half second the stop then gives answers to leave (src/server.ts), not
    // cut part-way with the account standing.
    await Promise.race([erasure, Bun.sleep(500)]);
    expect(answered).toBe(204);
    await erasure;
    expect(messages()).toBe(0);
    expect(sqlite.query("SELECT count(*) AS n FROM users WHERE id = ?").get(alice.userId)).toEqual({
      n: 0,
    });
    target.services.audit.flush();
    expect(
      sqlite.query("SELECT count(*) AS n FROM audit_events WHERE type = 'privacy.erased'").get(),
    ).toEqual({ n: 1 });
    expect(target.logs.text).toContain(
      "finishing the erasures in flight before closing connections",
    );
  });
});

describe("exports in flight (probe 83b F3: each held a page in memory while its client read slowly, with no bound on how many)", () => {
  const exportOf = (target: TestApp, accessToken: string) =>
    send(target, "/api/me/export", { headers: bearer(accessToken) });

  test("a user has one at a time: a second while the first is still being sent is 409; once it ends, another is sent", async () => {
    current = buildTestApp();
    const target = current;
    const alice = await signUp(target);
    const first = await exportOf(target, alice.accessToken);
    expect(first.status).toBe(200);
    const reader = first.body!.getReader();
    const second = await exportOf(target, alice.accessToken);
    expect(second.status).toBe(409);
    expect(await second.json()).toMatchObject({ code: "CONFLICT" });
    // Another user is not held up by it.
    const bob = await signUp(target);
    const bobs = await exportOf(target, bob.accessToken);
    expect(bobs.status).toBe(200);
    await bobs.text();
    // Closed by its client: over.
    await reader.cancel();
    const third = await exportOf(target, alice.accessToken);
    expect(third.status).toBe(200);
    // Read to its end: over too (bob's, read whole above, let his next one through).
    expect(JSON.parse(await third.text()).profile).toBeDefined();
    expect((await exportOf(target, bob.accessToken)).status).toBe(200);
  });

  test(`past ${EXPORTS_IN_FLIGHT_MAX} being sent at once, all users together, the next is 503 with Retry-After`, async () => {
    current = buildTestApp();
    const target = current;
    const held: { cancel(): Promise<void> }[] = [];
    for (let i = 0; i < EXPORTS_IN_FLIGHT_MAX; i++) {
      const user = await signUp(target);
      const response = await exportOf(target, user.accessToken);
      expect(response.status).toBe(200);
      held.push(response.body!.getReader());
    }
    const late = await signUp(target);
    const refused = await exportOf(target, late.accessToken);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("30");
    expect(await refused.json()).toMatchObject({ code: "SERVICE_UNAVAILABLE" });
    await held.pop()!.cancel();
    const sent = await exportOf(target, late.accessToken);
    expect(sent.status).toBe(200);
    await sent.text();
    for (const reader of held) await reader.cancel();
  });
});

test("an erasure hurried by the stop still gives back what the file moved to another account, and erases it (probe 83e F2)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const alice = await signUp(target);
  const bob = await signUp(target);
  const said = await chat(target, asUser(alice), { message: "my secret diagnosis is XYZZY" });
  const moved = ((await said.json()) as { conversationId: string }).conversationId;
  const sqlite = target.db.$client;
  // Someone with the file moved it to bob; and alice has a long payment history, whose parts ahead
  // run before the chat's (which give it back).
  sqlite.query("UPDATE chat_conversations SET owner_id = ? WHERE id = ?").run(bob.userId, moved);
  sqlite.run(
    `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
     INSERT INTO payments (id, owner, amount, currency, status, client_secret, description, customer_email, created_at, updated_at)
     SELECT 'pi_fake' || i, 'user:${alice.userId}', 100, 'usd', 'succeeded', 'pi_fake' || i || '_secret_x', 'alice', 'alice@example.com', i, i FROM n`,
  );
  const stripped = () =>
    (
      sqlite.query("SELECT count(*) AS n FROM payments WHERE customer_email IS NULL").get() as {
        n: number;
      }
    ).n;
  const erasure = send(target, "/api/me", { method: "DELETE", headers: bearer(alice.accessToken) });
  while (stripped() === 0) await Bun.sleep(2);
  expect(stripped()).toBeLessThan(5000);
  await target.services.endInFlight();
  expect((await erasure).status).toBe(204);
  expect(stripped()).toBe(5000);
  const texts = sqlite
    .query("SELECT content FROM chat_messages WHERE content LIKE '%XYZZY%'")
    .all();
  expect(texts).toEqual([]);
});

test("a connection that read its export and then sends nothing, or half a request, is closed as any idle one is (probe 83g F2)", async () => {
  current = buildTestApp();
  const target = current;
  const alice = await signUp(target);
  const server = serveInProcess(target);
  try {
    let received = "";
    let closedAt: number | null = null;
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port: Number(server.url.port),
      socket: {
        data(_socket, chunk) {
          received += new TextDecoder().decode(chunk);
        },
        close() {
          closedAt ??= performance.now();
        },
        error() {
          closedAt ??= performance.now();
        },
      },
    });
    socket.write(
      `GET /api/me/export HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${alice.accessToken}\r\n\r\n`,
    );
    // The whole answer (chunked: its last chunk), then half of another request and nothing more.
    while (!received.endsWith("0\r\n\r\n")) await Bun.sleep(20);
    expect(received).toStartWith("HTTP/1.1 200");
    const idleFrom = performance.now();
    socket.write("GET /api/auth/me HTTP/1.1\r\nHost: local");
    while (closedAt === null && performance.now() - idleFrom < 25_000) await Bun.sleep(100);
    // Bun's idle timeout (10 s) ends it; before, it stayed open for good.
    expect(closedAt).not.toBeNull();
    socket.end();
  } finally {
    await server.shutdown("test");
  }
}, 40_000);
