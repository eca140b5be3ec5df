import { afterEach, describe, expect, test } from "bun:test";
import { t } from "elysia";
import { generateApiKey, hasValidChecksum } from "../../../src/plugins/auth/api-key-format";
import { buildTestApp, secondProcess, send, type TestApp } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const adminHeaders = async (target: TestApp) =>
  bearer((await signUp(target, { role: "admin" })).accessToken);

describe("format", () => {
  test("keys are pal_live_/pal_test_ with a checksum that catches typos", () => {
    const key = generateApiKey("live");
    expect(key).toMatch(/^pal_live_[0-9A-Za-z]{36}$/);
    expect(hasValidChecksum(key)).toBe(true);
    expect(generateApiKey("test")).toStartWith("pal_test_");
    const typo = `${key.slice(0, 20)}${key[20] === "a" ? "b" : "a"}${key.slice(21)}`;
    expect(hasValidChecksum(typo)).toBe(false);
  });
});

describe("admin routes", () => {
  test("create shows the key once; only a hash and prefix are stored; list never shows it", async () => {
    current = buildTestApp();
    const headers = await adminHeaders(current);
    const created = await send(current, "/api/admin/api-keys", {
      headers,
      body: { name: "support bot", scopes: ["chat"], expiresInDays: 30 },
    });
    expect(created.status).toBe(201);
    const { key, apiKey } = (await created.json()) as {
      key: string;
      apiKey: { id: string; prefix: string; scopes: string[]; expiresAt: number };
    };
    expect(hasValidChecksum(key)).toBe(true);
    expect(apiKey.prefix).toBe(key.slice(0, 16));
    expect(apiKey.scopes).toEqual(["chat"]);
    const stored = JSON.stringify(current.db.$client.query("SELECT * FROM api_keys").all());
    expect(stored).not.toContain(key);
    expect(stored).toContain(new Bun.CryptoHasher("sha256").update(key).digest("hex"));
    const list = await send(current, "/api/admin/api-keys", { headers });
    expect(await list.text()).not.toContain(key);
    expect(current.logs.text).not.toContain(key);
    // The key works, by either header.
    expect((await send(current, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(
      200,
    );
    const me = await send(current, "/api/auth/me", { headers: bearer(key) });
    expect(await me.json()).toMatchObject({ kind: "key", id: apiKey.id, name: "support bot" });
    const event = current.db.$client
      .query("SELECT actor, detail FROM audit_events WHERE type = 'admin.key.created'")
      .get() as { actor: string; detail: string };
    expect(event.actor).toStartWith("user:");
    expect(event.detail).not.toContain(key);
  });

  test("non-admins get 403; no credential gets 401", async () => {
    current = buildTestApp();
    const user = await signUp(current);
    const forbidden = await send(current, "/api/admin/api-keys", {
      headers: bearer(user.accessToken),
    });
    expect(forbidden.status).toBe(403);
    expect(((await forbidden.json()) as { code: string }).code).toBe("FORBIDDEN");
    expect((await send(current, "/api/admin/api-keys")).status).toBe(401);
    const chatKey = createKey(current, ["chat"]);
    expect(
      (await send(current, "/api/admin/api-keys", { headers: bearer(chatKey.key) })).status,
    ).toBe(403);
    const adminKey = createKey(current, ["admin"]);
    expect(
      (await send(current, "/api/admin/api-keys", { headers: bearer(adminKey.key) })).status,
    ).toBe(200);
  });

  test("revoke takes effect at once here and within a second in another process", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const headers = await adminHeaders(current);
    const { key, record } = createKey(current, ["chat"]);
    const other = secondProcess(current, clock);
    const meOnOther = async () =>
      (
        await other.app.handle(
          new Request("http://localhost/api/auth/me", { headers: { "x-api-key": key } }),
        )
      ).status;
    expect(await meOnOther()).toBe(200);
    const revoked = await send(current, `/api/admin/api-keys/${record.id}`, {
      method: "DELETE",
      headers,
    });
    expect(revoked.status).toBe(204);
    expect((await send(current, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(
      401,
    );
    clock.advance(1_000);
    expect(await meOnOther()).toBe(401);
    other.close();
    const again = await send(current, `/api/admin/api-keys/${record.id}`, {
      method: "DELETE",
      headers,
    });
    expect(again.status).toBe(404);
  });

  test("rotation: the old key works through the grace period, then dies; the new one works", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const headers = await adminHeaders(current);
    const old = createKey(current, ["chat", "payments"]);
    const rotated = await send(current, `/api/admin/api-keys/${old.record.id}/rotate`, {
      headers,
      body: { graceMinutes: 10 },
    });
    expect(rotated.status).toBe(201);
    const fresh = (await rotated.json()) as { key: string; apiKey: { scopes: string[] } };
    expect(fresh.apiKey.scopes).toEqual(["chat", "payments"]);
    const status = async (key: string) =>
      (await send(current!, "/api/auth/me", { headers: { "x-api-key": key } })).status;
    expect(await status(old.key)).toBe(200);
    expect(await status(fresh.key)).toBe(200);
    clock.advance(10 * 60_000);
    expect(await status(old.key)).toBe(401);
    expect(await status(fresh.key)).toBe(200);
    const row = current.db.$client
      .query("SELECT replaced_by AS replacedBy FROM api_keys WHERE id = ?")
      .get(old.record.id) as { replacedBy: string };
    expect(row.replacedBy).toBeString();
  });

  test("an expired key is refused; last_used_at is written at most once a minute", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const { key, record } = current.services.apiKeys.create(
      { name: "short", scopes: ["chat"], userId: null, expiresAt: clock.now() + 120_000 },
      "test",
    );
    const lastUsed = () =>
      (
        current!.db.$client
          .query("SELECT last_used_at AS t FROM api_keys WHERE id = ?")
          .get(record.id) as {
          t: number | null;
        }
      ).t;
    await send(current, "/api/auth/me", { headers: { "x-api-key": key } });
    const first = lastUsed();
    expect(first).toBe(clock.now());
    clock.advance(30_000);
    await send(current, "/api/auth/me", { headers: { "x-api-key": key } });
    expect(lastUsed()).toBe(first);
    clock.advance(31_000);
    await send(current, "/api/auth/me", { headers: { "x-api-key": key } });
    expect(lastUsed()).toBe(clock.now());
    clock.advance(60_000);
    const expired = await send(current, "/api/auth/me", { headers: { "x-api-key": key } });
    expect(expired.status).toBe(401);
  });

  test("a file that cannot take last_used_at (full) answers the request as usual; it is written at the next use", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const { key, record } = current.services.apiKeys.create(
      { name: "hint", scopes: ["chat"], userId: null },
      "test",
    );
    const sqlite = current.db.$client;
    sqlite.run(
      "CREATE TRIGGER full_disk BEFORE UPDATE OF last_used_at ON api_keys BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    );
    const me = await send(current, "/api/auth/me", { headers: { "x-api-key": key } });
    expect(me.status).toBe(200);
    const lastUsed = () =>
      (
        sqlite.query("SELECT last_used_at AS t FROM api_keys WHERE id = ?").get(record.id) as {
          t: number | null;
        }
      ).t;
    expect(lastUsed()).toBeNull();
    sqlite.run("DROP TRIGGER full_disk");
    clock.advance(1_000);
    expect((await send(current, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(
      200,
    );
    expect(lastUsed()).toBe(clock.now());
  });

  test("wrong, malformed and doubled keys are refused", async () => {
    current = buildTestApp();
    const { key } = createKey(current, ["chat"]);
    const typo = `${key.slice(0, -1)}${key.endsWith("a") ? "b" : "a"}`;
    const attempts: Record<string, string>[] = [
      { "x-api-key": typo },
      { "x-api-key": generateApiKey("live") },
      { "x-api-key": "short" },
      { "x-api-key": key, authorization: `Bearer ${key}` },
    ];
    for (const headers of attempts) {
      expect((await send(current, "/api/auth/me", { headers })).status).toBe(401);
    }
  });
});

describe("scopes", () => {
  test("a key needs the route's scope; a user passes scope checks", async () => {
    current = buildTestApp();
    const app = current.app.post("/test/pay", ({ principal }) => ({ by: principal.kind }), {
      auth: { scope: "payments" },
      body: t.Object({ amount: t.Number() }),
    });
    const payments = createKey(current, ["payments"]);
    const chat = createKey(current, ["chat"]);
    const user = await signUp(current);
    const pay = (headers: Record<string, string>) =>
      send({ app }, "/test/pay", { headers, body: { amount: 1 } });
    expect((await pay({ "x-api-key": payments.key })).status).toBe(200);
    expect((await pay({ "x-api-key": chat.key })).status).toBe(403);
    expect((await pay(bearer(user.accessToken))).status).toBe(200);
    const forbidden = current.db.$client
      .query("SELECT detail FROM audit_events WHERE type = 'auth.forbidden'")
      .get() as { detail: string };
    expect(JSON.parse(forbidden.detail)).toEqual({ requires: "scope:payments" });
  });
});

test("API_KEYS bootstrap keys work and are stored only as hashes", async () => {
  const bootstrap = generateApiKey("live");
  const scoped = generateApiKey("test");
  current = buildTestApp({ env: { API_KEYS: `${bootstrap},${scoped}:payments+metrics` } });
  const rows = current.db.$client.query("SELECT name, scopes FROM api_keys ORDER BY name").all();
  expect(rows).toEqual([
    { name: "bootstrap-1", scopes: '["chat","payments"]' },
    { name: "bootstrap-2", scopes: '["payments","metrics"]' },
  ]);
  const stored = JSON.stringify(current.db.$client.query("SELECT * FROM api_keys").all());
  expect(stored).not.toContain(bootstrap);
  expect(stored).not.toContain(scoped);
  expect(
    (await send(current, "/api/auth/me", { headers: { "x-api-key": bootstrap } })).status,
  ).toBe(200);
});

test("a revocation is stamped once it holds the write lock: what another process committed before it never reads as after it (probe 39b F3)", async () => {
  current = buildTestApp();
  const target = current;
  const { record } = createKey(target, ["chat"]);
  target.db.$client.run("PRAGMA busy_timeout = 5000");
  // Another process holds the write lock for 300 ms, as one minting a key would.
  const holder = Bun.spawn(
    [
      "bun",
      "-e",
      `import { Database } from "bun:sqlite";
       const db = new Database(process.env.LOCK_DB);
       db.run("PRAGMA busy_timeout = 5000");
       db.run("BEGIN IMMEDIATE");
       console.log("locked");
       await Bun.sleep(300);
       db.run("COMMIT");`,
    ],
    { env: { PATH: process.env.PATH ?? "", LOCK_DB: target.databasePath }, stdout: "pipe" },
  );
  const reader = holder.stdout.getReader();
  let seen = "";
  while (!seen.includes("locked")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the lock holder exited before locking");
    seen += new TextDecoder().decode(value);
  }
  const asked = Date.now();
  expect(target.services.apiKeys.revoke(record.id, "test")).toBe(true);
  await holder.exited;
  const { revokedAt } = target.db.$client
    .query("SELECT revoked_at AS revokedAt FROM api_keys WHERE id = ?")
    .get(record.id) as { revokedAt: number };
  // Stamped after the wait for the lock, not when it was asked.
  expect(revokedAt - asked).toBeGreaterThanOrEqual(100);
});

describe("a key row written into the file with values Palisade never writes (probe 82g F2, F3)", () => {
  test("a name held as a BLOB: the key answers /me with its text, and rotating it works", async () => {
    current = buildTestApp();
    const headers = await adminHeaders(current);
    const made = createKey(current, ["chat"]);
    current.db.$client.run("UPDATE api_keys SET name = CAST(name AS BLOB) WHERE id = ?", [
      made.record.id,
    ]);
    const me = await send(current, "/api/auth/me", { headers: { "x-api-key": made.key } });
    expect(me.status).toBe(200);
    expect(((await me.json()) as { name: string }).name).toBe(made.record.name);
    const rotated = await send(current, `/api/admin/api-keys/${made.record.id}/rotate`, {
      headers,
      body: { graceMinutes: 1 },
    });
    expect(rotated.status).toBe(201);
    expect(((await rotated.json()) as { apiKey: { name: string } }).apiKey.name).toBe(
      made.record.name,
    );
  });

  test("a hash of another length or type is a key that does not match: 401 on every route, never 500", async () => {
    current = buildTestApp();
    for (const written of [
      "zz",
      `${"a".repeat(64)}é`,
      new Uint8Array([1, 2]),
      9007199254740991,
      -1,
    ]) {
      const made = createKey(current, ["chat"]);
      current.db.$client.run("UPDATE api_keys SET secret_hash = ? WHERE id = ?", [
        written,
        made.record.id,
      ]);
      for (const path of ["/api/auth/me", "/api/chat/conversations"]) {
        const answered = await send(current, path, { headers: { "x-api-key": made.key } });
        expect({ written: String(written), path, status: answered.status }).toEqual({
          written: String(written),
          path,
          status: 401,
        });
      }
    }
  });
});
