/**
 * A key acts for its owner and can never do more than the owner's current role allows: at its first
 * use, from the verified-key cache, and in another process on the same file. Demotion and erasure
 * narrow or revoke the owner's keys (audited); admins see every key's owner; pal_test_ keys are
 * refused in production.
 */
import { describe, expect, test } from "bun:test";
import type { Scope } from "../../../src/plugins/auth/principal";

/** What a key may hold for an owner of each role (the policy under test, written out). */
const ROLE_SCOPES: Record<"admin" | "user", readonly Scope[]> = {
  admin: ["chat", "payments", "admin", "metrics"],
  user: ["chat", "payments"],
};

import { buildTestApp, PRODUCTION_ENV, secondProcess, send, type TestApp } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { cleanupsAfterEach } from "../../support/cleanups";
import { ManualClock } from "../../support/clock";
import { runToExit } from "../../support/process";
import { startOn } from "../../support/restart";

const cleanups = cleanupsAfterEach();

const METRICS_TOKEN = "metrics-token-0123456789abcdefghijklmnop";

function app(clock?: ManualClock, env: Record<string, string> = {}): TestApp {
  const target = buildTestApp({ clock, env: { METRICS_TOKEN, ...env } });
  cleanups.push(() => target.close());
  return target;
}

type Target = { app: { handle(request: Request): Promise<Response> } };

/** What a key can do, as a client sees it: its scopes (or 401), admin routes, /metrics. */
async function powers(target: Target, key: string) {
  const me = await send(target, "/api/auth/me", { headers: { "x-api-key": key } });
  const scopes = me.status === 200 ? ((await me.json()) as { scopes: Scope[] }).scopes : null;
  const admin = (await send(target, "/api/admin/api-keys", { headers: { "x-api-key": key } }))
    .status;
  const metrics = (await send(target, "/metrics", { headers: bearer(key) })).status;
  return { me: me.status, scopes, admin, metrics };
}

function expected(scopes: readonly Scope[]) {
  if (scopes.length === 0) return { me: 401, scopes: null, admin: 401, metrics: 401 };
  return {
    me: 200,
    scopes: [...scopes],
    admin: scopes.includes("admin") ? 200 : 403,
    // A valid key without the scope may not read metrics (403), as for the admin routes.
    metrics: scopes.includes("metrics") ? 200 : 403,
  };
}

const SCOPE_SETS: Scope[][] = [
  ["chat"],
  ["payments"],
  ["admin"],
  ["metrics"],
  ["chat", "admin"],
  ["chat", "payments", "admin", "metrics"],
];
const USES = ["first use", "cached", "other process"] as const;
const ROLES = ["admin", "user"] as const;

const TABLE = ROLES.flatMap((role) =>
  SCOPE_SETS.flatMap((scopes) => USES.map((use) => [role, scopes, use] as const)),
);

describe("a key's scopes are bounded by its owner's current role at every use", () => {
  test.each(TABLE)("owner %s, key %o, %s", async (role, scopes, use) => {
    const clock = new ManualClock();
    const target = app(clock);
    const owner = await signUp(target, { role: "admin" });
    const { key } = createKey(target, scopes, owner.userId);
    const other = secondProcess(target, clock);
    cleanups.push(other.close);
    // Warm the cache where this use reads from, while the owner is still an admin.
    if (use === "cached") expect((await powers(target, key)).scopes).toEqual([...scopes]);
    if (use === "other process") expect((await powers(other, key)).scopes).toEqual([...scopes]);
    if (role === "user") target.services.auth.setRole(owner.userId, "user", "test");
    clock.advance(1_100); // the revocation feed reaches every process within a second
    const allowed = scopes.filter((scope) => ROLE_SCOPES[role].includes(scope));
    expect(await powers(use === "other process" ? other : target, key)).toEqual(expected(allowed));
  });

  test("a role changed behind the service's back (in the file) leaves the owner's key acting for nobody", async () => {
    const target = app();
    const owner = await signUp(target, { role: "admin" });
    const { key } = createKey(target, ["chat", "admin", "metrics"], owner.userId);
    target.db.$client.run("UPDATE users SET role = 'user' WHERE id = ?", [owner.userId]);
    const fresh = secondProcess(target);
    cleanups.push(fresh.close);
    // The owner's row no longer matches its seal: neither the new nor the old role is believed.
    expect(await powers(fresh, key)).toEqual(expected([]));
    expect(await powers(target, key)).toEqual(expected([]));
    target.services.audit.flush();
    const reports = target.db.$client
      .query("SELECT outcome, detail FROM audit_events WHERE type = 'auth.credential_tampered'")
      .all();
    expect(reports).toContainEqual({
      outcome: "denied",
      detail: JSON.stringify({ id: owner.userId, table: "users" }),
    });
  });

  test("a demoted admin's key cannot mint more keys", async () => {
    const target = app();
    const owner = await signUp(target, { role: "admin" });
    const { key } = createKey(target, ["chat", "admin"], owner.userId);
    const minted = await send(target, "/api/admin/api-keys", {
      headers: { "x-api-key": key },
      body: { name: "child", scopes: ["admin"] },
    });
    expect(minted.status).toBe(201);
    const child = ((await minted.json()) as { key: string }).key;
    target.services.auth.setRole(owner.userId, "user", "test");
    const again = await send(target, "/api/admin/api-keys", {
      headers: { "x-api-key": key },
      body: { name: "grandchild", scopes: ["admin"] },
    });
    expect(again.status).toBe(403);
    // The key it minted earlier acted for the same owner: it went with the demotion.
    expect((await powers(target, child)).me).toBe(401);
  });

  test("a key minted by a key with an expiry lives no longer than it, whatever it asks", async () => {
    const clock = new ManualClock();
    const target = app(clock);
    const owner = await signUp(target, { role: "admin" });
    const DAY = 86_400_000;
    const parent = target.services.apiKeys.create(
      {
        name: "short",
        scopes: ["admin", "chat"],
        userId: owner.userId,
        expiresAt: clock.now() + 10 * DAY,
      },
      "test",
    );
    const mint = async (body: Record<string, unknown>) => {
      const minted = await send(target, "/api/admin/api-keys", {
        headers: { "x-api-key": parent.key },
        body: { name: "child", scopes: ["chat"], ...body },
      });
      expect(minted.status).toBe(201);
      return (await minted.json()) as { key: string; apiKey: { expiresAt: number | null } };
    };
    const parentEnd = clock.now() + 10 * DAY;
    expect((await mint({})).apiKey.expiresAt).toBe(parentEnd);
    expect((await mint({ expiresInDays: 30 })).apiKey.expiresAt).toBe(parentEnd);
    // Asking for less than the parent has left is kept as asked: a shorter life is always allowed.
    const shorter = await send(target, "/api/admin/api-keys", {
      headers: { "x-api-key": parent.key },
      body: { name: "child", scopes: ["chat"], expiresInDays: 1 },
    });
    expect(shorter.status).toBe(201);
    expect(((await shorter.json()) as { apiKey: { expiresAt: number } }).apiKey.expiresAt).toBe(
      clock.now() + DAY,
    );
    const forever = await mint({});
    // A user's own admin session is not a key: what it mints may never expire.
    const byUser = await send(target, "/api/admin/api-keys", {
      headers: bearer(owner.accessToken),
      body: { name: "by-user", scopes: ["chat"] },
    });
    const permanent = (await byUser.json()) as { apiKey: { id: string; expiresAt: number | null } };
    expect(permanent.apiKey.expiresAt).toBeNull();
    // Rotating that never-expiring key with the short-lived one gives a successor that ends with it.
    const rotated = await send(target, `/api/admin/api-keys/${permanent.apiKey.id}/rotate`, {
      headers: { "x-api-key": parent.key },
      body: { graceMinutes: 0 },
    });
    expect(rotated.status).toBe(201);
    const successor = (await rotated.json()) as { key: string; apiKey: { expiresAt: number } };
    expect(successor.apiKey.expiresAt).toBe(parentEnd);

    clock.advance(10 * DAY + 1000);
    expect((await powers(target, forever.key)).me).toBe(401);
    expect((await powers(target, successor.key)).me).toBe(401);
  });
  test("demotion narrows or revokes the stored keys, each change audited", async () => {
    const target = app();
    const owner = await signUp(target, { role: "admin" });
    const mixed = createKey(target, ["chat", "admin"], owner.userId).record;
    const adminOnly = createKey(target, ["admin"], owner.userId).record;
    const chatOnly = createKey(target, ["chat"], owner.userId).record;
    target.services.auth.setRole(owner.userId, "user", "cli");
    const rows = target.db.$client
      .query("SELECT id, scopes, revoked_at IS NOT NULL AS revoked FROM api_keys")
      .all() as { id: string; scopes: string; revoked: number }[];
    const byId = new Map(rows.map((row) => [row.id, row]));
    expect(byId.get(mixed.id)).toMatchObject({ scopes: '["chat"]', revoked: 0 });
    expect(byId.get(adminOnly.id)).toMatchObject({ revoked: 1 });
    expect(byId.get(chatOnly.id)).toMatchObject({ scopes: '["chat"]', revoked: 0 });
    const events = target.db.$client
      .query(
        "SELECT type, actor, detail FROM audit_events WHERE type IN ('admin.key.narrowed', 'admin.key.revoked') ORDER BY id",
      )
      .all()
      .map((row) => {
        const { type, actor, detail } = row as { type: string; actor: string; detail: string };
        return { type, actor, detail: JSON.parse(detail) };
      })
      .sort((a, b) => a.type.localeCompare(b.type));
    expect(events).toEqual([
      {
        type: "admin.key.narrowed",
        actor: "cli",
        detail: { keyId: mixed.id, from: "chat,admin", to: "chat", reason: "owner_role_changed" },
      },
      {
        type: "admin.key.revoked",
        actor: "cli",
        detail: { keyId: adminOnly.id, reason: "owner_role_changed" },
      },
    ]);
    // Promotion gives nothing back: the narrowed scopes stay narrowed.
    target.services.auth.setRole(owner.userId, "admin", "cli");
    expect(target.services.apiKeys.get(mixed.id)!.scopes).toEqual(["chat"]);
  });

  test("users:role in the CLI, another process, reaches a running app within a second", async () => {
    const target = app();
    const owner = await signUp(target, { role: "admin" });
    const { key } = createKey(target, ["chat", "admin"], owner.userId);
    expect((await powers(target, key)).admin).toBe(200); // cached now
    const env = { DATABASE_PATH: target.databasePath };
    const cli = (args: string[]) => runToExit(["bun", "run", "src/cli/index.ts", ...args], env);
    const demoted = await cli([
      "users:role",
      "--email",
      owner.email.toUpperCase(),
      "--role",
      "user",
    ]);
    expect(demoted.code).toBe(0);
    await Bun.sleep(1_100);
    expect(await powers(target, key)).toEqual(expected(["chat"]));
    const listed = await cli(["keys:list"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(`owner ${owner.email}`);
  });

  test("erasure: the owner's cached keys stop working in every process", async () => {
    const clock = new ManualClock();
    const target = app(clock);
    const owner = await signUp(target, {});
    const { key } = createKey(target, ["chat"], owner.userId);
    const other = secondProcess(target, clock);
    cleanups.push(other.close);
    expect((await powers(other, key)).me).toBe(200);
    expect(await target.services.privacy.erase(owner.userId, { ip: null, requestId: null })).toBe(
      true,
    );
    clock.advance(1_100);
    expect((await powers(other, key)).me).toBe(401);
    expect((await powers(target, key)).me).toBe(401);
  });
});

describe("the admin key list shows each key's owner", () => {
  test("API and CLI keys name their owner; bootstrap and operator keys have none", async () => {
    const bootstrapKey = "bootstrap-key-0123456789-abcdefghij";
    const target = app(undefined, { API_KEYS: `${bootstrapKey}:chat` });
    const admin = await signUp(target, { role: "admin" });
    const created = await send(target, "/api/admin/api-keys", {
      headers: bearer(admin.accessToken),
      body: { name: "mine", scopes: ["chat"] },
    });
    expect(created.status).toBe(201);
    const createdKey = (await created.json()) as { apiKey: { owner: unknown } };
    expect(createdKey.apiKey.owner).toEqual({ id: admin.userId, email: admin.email });
    createKey(target, ["metrics"], null);
    const list = await send(target, "/api/admin/api-keys", { headers: bearer(admin.accessToken) });
    const { keys } = (await list.json()) as {
      keys: { name: string; origin: string; owner: { id: string; email: string } | null }[];
    };
    const summary = keys
      .map(({ name, origin, owner }) => ({ name, origin, owner }))
      .sort((a, b) => a.name.localeCompare(b.name));
    expect(summary).toEqual([
      { name: "bootstrap-1", origin: "bootstrap", owner: null },
      { name: "mine", origin: "api", owner: { id: admin.userId, email: admin.email } },
      { name: expect.stringMatching(/^test-/), origin: "api", owner: null },
    ]);
  });
});

describe("keys:create --owner", () => {
  test("finds the owner by any spelling and refuses scopes beyond the owner's role", async () => {
    const target = app();
    const user = await signUp(target, { email: "Owner@example.com" });
    const env = { DATABASE_PATH: target.databasePath };
    const cli = (args: string[]) => runToExit(["bun", "run", "src/cli/index.ts", ...args], env);
    const refused = await cli([
      "keys:create",
      "--name",
      "x",
      "--scopes",
      "chat,admin",
      "--owner",
      "ＯＷＮＥＲ@EXAMPLE.COM.",
    ]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toBe(
      "palisade keys:create: --owner is a user, whose keys may not hold admin",
    );
    const ok = await cli([
      "keys:create",
      "--name",
      "x",
      "--scopes",
      "chat",
      "--owner",
      "owner@example.com",
    ]);
    expect(ok.code).toBe(0);
    expect(target.services.apiKeys.list(user.userId)).toHaveLength(1);
  });
});

describe("pal_test_ keys in production", () => {
  test("creating one through the admin route is 422 naming body/environment", async () => {
    const target = app(undefined, PRODUCTION_ENV);
    const admin = await signUp(target, { role: "admin" });
    const response = await send(target, "/api/admin/api-keys", {
      headers: bearer(admin.accessToken),
      body: { name: "t", scopes: ["chat"], environment: "test" },
    });
    expect(response.status).toBe(422);
    const problem = (await response.json()) as { code: string; errors: { field: string }[] };
    expect(problem.code).toBe("VALIDATION_FAILED");
    expect(problem.errors.map((error) => error.field)).toEqual(["body/environment"]);
    expect(target.services.apiKeys.list()).toHaveLength(0);
  });

  test("a stored one is 401 in production, cannot be rotated there, and works elsewhere", async () => {
    // The same file under both profiles: the same AUDIT_SECRET_KEY (the key its seals are made with).
    const target = app(undefined, { AUDIT_SECRET_KEY: PRODUCTION_ENV.AUDIT_SECRET_KEY });
    const owner = await signUp(target, { role: "admin" });
    const testKey = target.services.apiKeys.create(
      { name: "t", scopes: ["chat"], userId: owner.userId, environment: "test" },
      "test",
    );
    const liveKey = createKey(target, ["chat"], owner.userId);
    expect((await powers(target, testKey.key)).me).toBe(200);
    const production = startOn(target.databasePath, PRODUCTION_ENV);
    cleanups.push(production.close);
    expect((await powers(production, testKey.key)).me).toBe(401);
    expect((await powers(production, liveKey.key)).me).toBe(200);
    expect(production.services.apiKeys.rotate(testKey.record.id, 0, "test")).toBeNull();
  });

  test("keys:create --env test is refused with exit 2 when APP_ENV=production", async () => {
    const target = app();
    const result = await runToExit(
      [
        "bun",
        "run",
        "src/cli/index.ts",
        "keys:create",
        "--name",
        "t",
        "--scopes",
        "chat",
        "--env",
        "test",
      ],
      { ...PRODUCTION_ENV, DATABASE_PATH: target.databasePath },
    );
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(
      "palisade keys:create: --env test is refused when APP_ENV=production",
    );
  });
});

describe("rotation keeps keys bound to a person", () => {
  test("an ownerless key rotated by an admin user becomes that user's and loses admin with them", async () => {
    const target = app();
    const admin = await signUp(target, { role: "admin" });
    const operator = createKey(target, ["admin"], null);
    const rotated = await send(target, `/api/admin/api-keys/${operator.record.id}/rotate`, {
      headers: bearer(admin.accessToken),
      body: { graceMinutes: 1 },
    });
    expect(rotated.status).toBe(201);
    const { key, apiKey } = (await rotated.json()) as {
      key: string;
      apiKey: { owner: { id: string } | null };
    };
    expect(apiKey.owner?.id).toBe(admin.userId);
    expect((await powers(target, key)).admin).toBe(200);

    target.services.auth.setRole(admin.userId, "user", "test");
    expect((await powers(target, key)).admin).not.toBe(200);
  });

  test("a key principal without an owner rotates into an operator key, as it creates one", async () => {
    const target = app();
    const operator = createKey(target, ["admin"], null);
    const other = createKey(target, ["chat"], null);
    const rotated = await send(target, `/api/admin/api-keys/${other.record.id}/rotate`, {
      headers: { "x-api-key": operator.key },
      body: {},
    });
    expect(rotated.status).toBe(201);
    expect(((await rotated.json()) as { apiKey: { owner: unknown } }).apiKey.owner).toBeNull();
  });

  test("an operator key rotating a user's key gets an ownerless key, never one acting as the user (probe 20d)", async () => {
    const target = app();
    const operator = createKey(target, ["admin"], null);
    const admin = await signUp(target, { role: "admin" });
    const usersKey = createKey(target, ["admin", "chat", "payments"], admin.userId);
    const rotated = await send(target, `/api/admin/api-keys/${usersKey.record.id}/rotate`, {
      headers: { "x-api-key": operator.key },
      body: {},
    });
    expect(rotated.status).toBe(201);
    const { key, apiKey } = (await rotated.json()) as {
      key: string;
      apiKey: { owner: unknown; scopes: string[] };
    };
    expect(apiKey.owner).toBeNull();
    const { id: successorId } = apiKey as unknown as { id: string };
    expect(
      target.db.$client
        .query("SELECT user_id AS owner FROM api_keys WHERE id = ?")
        .get(successorId),
    ).toEqual({ owner: null });
    // Its own rotations, of the user's other keys, are an ownerless key's too.
    const other = createKey(target, ["chat"], admin.userId);
    const again = await send(target, `/api/admin/api-keys/${other.record.id}/rotate`, {
      headers: { "x-api-key": key },
      body: {},
    });
    expect(((await again.json()) as { apiKey: { owner: unknown } }).apiKey.owner).toBeNull();
  });

  test("a bootstrap key is not rotated through the API: API_KEYS is its truth", async () => {
    const target = app(undefined, { API_KEYS: "bootstrapkeyROTATEROTATEROTATE1:admin" });
    const admin = await signUp(target, { role: "admin" });
    const bootstrap = target.services.apiKeys.list().find((k) => k.origin === "bootstrap")!;
    const refused = await send(target, `/api/admin/api-keys/${bootstrap.id}/rotate`, {
      headers: bearer(admin.accessToken),
      body: {},
    });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { code: string }).code).toBe("CONFLICT");
    expect(target.services.apiKeys.rotate(bootstrap.id, 60_000, "test", admin.userId)).toBeNull();
    expect(target.services.apiKeys.list().filter((k) => k.revokedAt === null)).toHaveLength(1);
  });
});

describe("rotation hands the successor to whoever rotates", () => {
  test("an admin rotating another admin's key owns the successor, and loses it on demotion", async () => {
    const target = app();
    const rotator = await signUp(target, { role: "admin" });
    const owner = await signUp(target, { role: "admin" });
    const theirs = createKey(target, ["admin"], owner.userId);
    const rotated = await send(target, `/api/admin/api-keys/${theirs.record.id}/rotate`, {
      headers: bearer(rotator.accessToken),
      body: { graceMinutes: 0 },
    });
    expect(rotated.status).toBe(201);
    const { key, apiKey } = (await rotated.json()) as {
      key: string;
      apiKey: { owner: { id: string } | null };
    };
    expect(apiKey.owner?.id).toBe(rotator.userId);
    expect((await powers(target, key)).admin).toBe(200);
    target.services.auth.setRole(rotator.userId, "user", "test");
    expect((await powers(target, key)).admin).not.toBe(200);
  });

  test("concurrent rotations of one key make one successor", async () => {
    const target = app();
    const admin = await signUp(target, { role: "admin" });
    const key = createKey(target, ["chat"], admin.userId);
    const responses = await Promise.all(
      Array.from({ length: 8 }, () =>
        send(target, `/api/admin/api-keys/${key.record.id}/rotate`, {
          headers: bearer(admin.accessToken),
          body: {},
        }),
      ),
    );
    expect(responses.map((r) => r.status).sort()).toEqual([201, 404, 404, 404, 404, 404, 404, 404]);
    const successors = target.services.apiKeys
      .list(admin.userId)
      .filter((k) => k.id !== key.record.id && k.revokedAt === null);
    expect(successors).toHaveLength(1);
    // The successor is the key to rotate next; the old one cannot be rotated again.
    expect(target.services.apiKeys.rotate(key.record.id, 0, "test", admin.userId)).toBeNull();
  });
});
