/**
 * What someone who can write the database file, but does not hold AUDIT_SECRET_KEY, can do with
 * credentials: every way of making or widening one through the file is refused (401, as if the
 * row did not exist) and reported once, and Palisade never reseals such a row. Also the upgrade:
 * the start that adds the seal columns seals what was there, and no later start seals anything.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { applyMigrationsFrom } from "../../../src/db/migrate-from-folder";
import { bootstrapLineage } from "../../../src/modules/auth/api-keys";
import {
  credentialSealing,
  lineageSealing,
  SEALS_MIGRATION,
} from "../../../src/modules/auth/seal-upgrade";
import { CHAT_SEALS_MIGRATION } from "../../../src/modules/chat/history-seal-upgrade";
import { OUTBOX_SEALS_MIGRATION } from "../../../src/modules/webhooks/outbox-seal";
import { generateApiKey, hashApiKey, keyPrefix } from "../../../src/plugins/auth/api-key-format";
import { createCredentialSeal, tamperReporter } from "../../../src/plugins/auth/seal";
import { sha256Hex } from "../../../src/plugins/auth/tokens";
import { upgradeSealing } from "../../../src/upgrade-sealing";
import {
  buildTestApp,
  secondProcess,
  send,
  TEST_PASSWORD_HASHING,
  type TestApp,
  tempDir,
} from "../../support/app";
import { bearer, createKey, STRONG_PASSWORD, signUp } from "../../support/auth";
import { appClosedAfter, cleanupsAfterEach } from "../../support/cleanups";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";
import { migrationsUpTo, migrationTagsFrom, putBackBefore } from "../../support/migrations";
import { runToExit, startService } from "../../support/process";
import { UNCHECKED_ROUTE, uncheckedStoredValue } from "../../support/unchecked-stored-value";

const cleanups = cleanupsAfterEach();

const app = (): TestApp => appClosedAfter(cleanups);

/** The file as its writer would see it next: a process started on it after the edit. */
function restarted(target: TestApp) {
  const next = secondProcess(target);
  cleanups.push(next.close);
  return { ...target, app: next.app, services: next.services };
}

function tamperReports(target: TestApp): { table: string; id: string }[] {
  target.services.audit.flush();
  return target.db.$client
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'auth.credential_tampered'",
    )
    .all()
    .map((row) => JSON.parse(row.detail));
}

async function asKey(target: Pick<TestApp, "app">, key: string) {
  const me = await send(target as TestApp, "/api/auth/me", { headers: { "x-api-key": key } });
  const admin = await send(target as TestApp, "/api/admin/api-keys", {
    headers: { "x-api-key": key },
  });
  return { me: me.status, admin: admin.status };
}

async function login(target: Pick<TestApp, "app">, email: string, password = STRONG_PASSWORD) {
  return (
    await send(target as TestApp, "/api/auth/login", {
      body: { email, password },
      peer: `10.77.${Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}`,
    })
  ).status;
}

function insertKey(target: TestApp, key: string, fields: { scopes: string; seal: string | null }) {
  const id = Bun.randomUUIDv7();
  target.db.$client.run(
    `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin, seal)
     VALUES (?, 'forged', ?, ?, ?, NULL, ?, 'api', ?)`,
    [id, keyPrefix(key), hashApiKey(key), fields.scopes, Date.now(), fields.seal],
  );
  return id;
}

describe("API keys written into the file", () => {
  test("a key inserted with a hash of the writer's choosing is refused, whatever its seal says", async () => {
    const target = app();
    const genuine = createKey(target, ["chat"]);
    const genuineSeal = target.db.$client
      .query<{ seal: string }, [string]>("SELECT seal FROM api_keys WHERE id = ?")
      .get(genuine.record.id)!.seal;
    const forged: string[] = [];
    for (const seal of [null, "", genuineSeal, "x".repeat(genuineSeal.length)]) {
      const key = generateApiKey("live");
      insertKey(target, key, { scopes: '["admin"]', seal });
      forged.push(key);
    }
    const next = restarted(target);
    for (const key of forged) {
      expect(await asKey(next, key)).toEqual({ me: 401, admin: 401 });
      expect(await asKey(target, key)).toEqual({ me: 401, admin: 401 });
    }
    // The genuine key still works, in both processes.
    expect((await asKey(next, genuine.key)).me).toBe(200);
    // Reported once per row by each process that met it.
    const reported = tamperReports(target).filter((r) => r.table === "api_keys");
    expect(new Set(reported.map((r) => r.id)).size).toBe(4);
    expect(reported).toHaveLength(8);
  });

  test("widening a stored key (scopes, owner, expiry, revocation, origin) makes it act for nobody", async () => {
    const target = app();
    const owner = await signUp(target);
    const admin = await signUp(target, { role: "admin" });
    const edits: [string, unknown[]][] = [
      ['UPDATE api_keys SET scopes = \'["chat","admin"]\' WHERE id = ?', []],
      ["UPDATE api_keys SET user_id = ? WHERE id = ?", [admin.userId]],
      ["UPDATE api_keys SET expires_at = NULL WHERE id = ?", []],
      ["UPDATE api_keys SET revoked_at = NULL WHERE id = ?", []],
      ["UPDATE api_keys SET origin = 'bootstrap' WHERE id = ?", []],
    ];
    for (const [statement, values] of edits) {
      const made = target.services.apiKeys.create(
        { name: "k", scopes: ["chat"], userId: owner.userId, expiresAt: Date.now() + 60_000 },
        "test",
      );
      if (statement.includes("revoked_at")) {
        target.services.apiKeys.revoke(made.record.id, "test");
        expect((await asKey(target, made.key)).me).toBe(401);
      } else {
        expect((await asKey(target, made.key)).me).toBe(200);
      }
      target.db.$client.run(statement, [...values, made.record.id] as string[]);
      const next = restarted(target);
      expect(await asKey(next, made.key)).toEqual({ me: 401, admin: 401 });
    }
  });

  test("a change Palisade makes to a tampered key never reseals it", async () => {
    const target = app();
    const made = createKey(target, ["chat"]);
    target.db.$client.run("UPDATE api_keys SET scopes = '[\"admin\"]' WHERE id = ?", [
      made.record.id,
    ]);
    // Revoking it still takes; putting the revocation back afterwards gives nothing either.
    expect(target.services.apiKeys.revoke(made.record.id, "test")).toBe(true);
    target.db.$client.run("UPDATE api_keys SET revoked_at = NULL WHERE id = ?", [made.record.id]);
    expect(await asKey(restarted(target), made.key)).toEqual({ me: 401, admin: 401 });
    expect(tamperReports(target)).toContainEqual({ table: "api_keys", id: made.record.id });
  });
});

describe("accounts written into the file", () => {
  test("a password hash swapped in signs nobody in, not even with the old password", async () => {
    const target = app();
    const victim = await signUp(target, { role: "admin" });
    const chosen = await Bun.password.hash("attacker-chosen-password-1", {
      algorithm: "argon2id",
      ...TEST_PASSWORD_HASHING,
    });
    target.db.$client.run("UPDATE users SET password_hash = ? WHERE id = ?", [
      chosen,
      victim.userId,
    ]);
    const next = restarted(target);
    expect(await login(next, victim.email, "attacker-chosen-password-1")).toBe(401);
    expect(await login(next, victim.email)).toBe(401);
    expect(tamperReports(target)).toContainEqual({ table: "users", id: victim.userId });
  });

  test("another account's hash and seal copied over are refused: the seal names the account", async () => {
    const target = app();
    const attacker = await signUp(target);
    const victim = await signUp(target, { role: "admin" });
    target.db.$client.run(
      `UPDATE users SET (password_hash, seal) =
         (SELECT password_hash, seal FROM users WHERE id = ?) WHERE id = ?`,
      [attacker.userId, victim.userId],
    );
    expect(await login(restarted(target), victim.email)).toBe(401);
  });

  test("a role raised in the file signs in nobody, refreshes nothing, and setRole does not launder it", async () => {
    const target = app();
    const user = await signUp(target);
    target.db.$client.run("UPDATE users SET role = 'admin' WHERE id = ?", [user.userId]);
    const next = restarted(target);
    expect(await login(next, user.email)).toBe(401);
    const refreshed = await send(next, "/api/auth/refresh", {
      body: { refreshToken: user.refreshToken },
    });
    expect(refreshed.status).toBe(401);
    // An operator may demote it, never promote it; the demotion ends its sessions, and Palisade
    // never reseals the row: here it is back to what was sealed, so it signs in again as a user.
    expect(next.services.auth.setRole(user.userId, "admin", "test")).toBe(false);
    expect(next.services.auth.setRole(user.userId, "user", "test")).toBe(true);
    const access = await send(next, "/api/auth/me", { headers: bearer(user.accessToken) });
    expect(access.status).toBe(401);
    const signedIn = await send(next, "/api/auth/login", {
      body: { email: user.email, password: STRONG_PASSWORD },
      peer: "10.66.1.1",
    });
    expect(signedIn.status).toBe(200);
    const { accessToken } = (await signedIn.json()) as { accessToken: string };
    expect((await send(next, "/api/admin/api-keys", { headers: bearer(accessToken) })).status).toBe(
      403,
    );
  });

  test("an account changed in the file: its access tokens are refused on every route, not only /me", async () => {
    const clock = new ManualClock();
    const target = buildTestApp({ clock });
    cleanups.push(() => target.close());
    const admin = await signUp(target, { role: "admin" });
    const user = await signUp(target);
    const routes = async (on: Pick<TestApp, "app">, token: string) => {
      const statuses: number[] = [];
      for (const path of ["/api/auth/me", "/api/chat/conversations", "/api/admin/blocks"]) {
        statuses.push((await send(on as TestApp, path, { headers: bearer(token) })).status);
      }
      return statuses;
    };
    // Verified and cached here before the edit.
    expect(await routes(target, admin.accessToken)).toEqual([200, 200, 200]);
    expect(await routes(target, user.accessToken)).toEqual([200, 200, 403]);

    // The admin demoted in the file (to hide them, say), the user promoted: neither row matches.
    target.db.$client.run("UPDATE users SET role = 'user' WHERE id = ?", [admin.userId]);
    target.db.$client.run("UPDATE users SET role = 'admin' WHERE id = ?", [user.userId]);
    // A process that never saw the tokens refuses them at once…
    const next = restarted(target);
    expect(await routes(next, admin.accessToken)).toEqual([401, 401, 401]);
    expect(await routes(next, user.accessToken)).toEqual([401, 401, 401]);
    // …and this one once it reads their sessions again (every 30 s for a cached token).
    clock.advance(30_000);
    expect(await routes(target, admin.accessToken)).toEqual([401, 401, 401]);
    expect(await routes(target, user.accessToken)).toEqual([401, 401, 401]);
    expect(tamperReports(target)).toContainEqual({ table: "users", id: admin.userId });
  });

  test("an account inserted into the file cannot sign in", async () => {
    const target = app();
    const hash = await Bun.password.hash(STRONG_PASSWORD, {
      algorithm: "argon2id",
      ...TEST_PASSWORD_HASHING,
    });
    target.db.$client.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, created_at, updated_at, seal)
       VALUES ('forged', 'forged@example.test', 'forged@example.test', ?, 'admin', 1, 1, NULL)`,
      [hash],
    );
    expect(await login(restarted(target), "forged@example.test")).toBe(401);
  });

  test("a genuine role change reseals: the promoted account signs in with its new role", async () => {
    const target = app();
    const user = await signUp(target, { role: "admin" });
    const next = restarted(target);
    const response = await send(next, "/api/auth/login", {
      body: { email: user.email, password: STRONG_PASSWORD },
      peer: "10.66.0.1",
    });
    expect(response.status).toBe(200);
    const { accessToken } = (await response.json()) as { accessToken: string };
    const adminOnly = await send(next, "/api/admin/api-keys", { headers: bearer(accessToken) });
    expect(adminOnly.status).toBe(200);
  });
});

describe("refresh tokens written into the file", () => {
  test("a token inserted for an account's live family mints nothing", async () => {
    const target = app();
    const victim = await signUp(target, { role: "admin" });
    const family = target.db.$client
      .query<{ family_id: string }, [string]>(
        "SELECT family_id FROM refresh_tokens WHERE user_id = ? LIMIT 1",
      )
      .get(victim.userId)!.family_id;
    const chosen = "attacker-chosen-refresh-token-0123456789abcdef";
    target.db.$client.run(
      `INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at, seal)
       VALUES ('forged', ?, ?, ?, ?, ?, NULL)`,
      [victim.userId, family, sha256Hex(chosen), Date.now(), Date.now() + 86_400_000],
    );
    const response = await send(restarted(target), "/api/auth/refresh", {
      body: { refreshToken: chosen },
    });
    expect(response.status).toBe(401);
    expect(tamperReports(target)).toContainEqual({ table: "refresh_tokens", id: "forged" });
  });

  test("a token moved to another account mints nothing; left alone it still refreshes", async () => {
    const target = app();
    const attacker = await signUp(target);
    const victim = await signUp(target, { role: "admin" });
    const spare = await signUp(target);
    target.db.$client.run("UPDATE refresh_tokens SET user_id = ? WHERE token_hash = ?", [
      victim.userId,
      sha256Hex(attacker.refreshToken),
    ]);
    const next = restarted(target);
    const moved = await send(next, "/api/auth/refresh", {
      body: { refreshToken: attacker.refreshToken },
    });
    expect(moved.status).toBe(401);
    const untouched = await send(next, "/api/auth/refresh", {
      body: { refreshToken: spare.refreshToken },
    });
    expect(untouched.status).toBe(200);
  });
});

describe("sessions written into the file", () => {
  test("a logout undone in the file (family and feed) leaves its access token refused", async () => {
    const target = app();
    const user = await signUp(target);
    const logout = await send(target, "/api/auth/logout", {
      method: "POST",
      headers: bearer(user.accessToken),
    });
    expect(logout.status).toBe(204);
    target.db.$client.run("UPDATE refresh_families SET revoked_at = NULL WHERE user_id = ?", [
      user.userId,
    ]);
    target.db.$client.run("UPDATE refresh_tokens SET revoked_at = NULL WHERE user_id = ?", [
      user.userId,
    ]);
    target.db.$client.run("DELETE FROM auth_revocations");
    const next = restarted(target);
    expect((await send(next, "/api/auth/me", { headers: bearer(user.accessToken) })).status).toBe(
      401,
    );
    const refreshed = await send(next, "/api/auth/refresh", {
      body: { refreshToken: user.refreshToken },
    });
    expect(refreshed.status).toBe(401);
    expect(tamperReports(target).map((r) => r.table)).toContain("refresh_families");
  });
});

describe("seals that are not even the right shape", () => {
  const multibyte = "é".repeat(43);

  test("a seal of as many characters but other bytes is a mismatch: 401, never 500; revocation still takes", async () => {
    const target = app();
    const made = createKey(target, ["chat"]);
    target.db.$client.run("UPDATE api_keys SET seal = ? WHERE id = ?", [multibyte, made.record.id]);
    expect(await asKey(restarted(target), made.key)).toEqual({ me: 401, admin: 401 });
    expect(target.services.apiKeys.revoke(made.record.id, "test")).toBe(true);
    const user = await signUp(target);
    target.db.$client.run("UPDATE users SET seal = ? WHERE id = ?", [multibyte, user.userId]);
    expect(await login(restarted(target), user.email)).toBe(401);
  });
});

describe("operators acting on tampered rows", () => {
  test("rotating a key widened in the file gives no successor", async () => {
    const target = app();
    const made = createKey(target, ["chat"]);
    target.db.$client.run('UPDATE api_keys SET scopes = \'["chat","admin"]\' WHERE id = ?', [
      made.record.id,
    ]);
    expect(target.services.apiKeys.rotate(made.record.id, 60_000, "test")).toBeNull();
    const forged = generateApiKey("live");
    const forgedId = insertKey(target, forged, { scopes: '["admin"]', seal: null });
    expect(target.services.apiKeys.rotate(forgedId, 60_000, "test")).toBeNull();
    expect(target.services.apiKeys.list().filter((key) => key.name !== "forged")).toHaveLength(1);
  });

  test("addresses swapped in the file cannot redirect a promotion to another account", async () => {
    const target = app();
    const carol = await signUp(target);
    const eve = await signUp(target);
    const swap = target.db.$client.prepare(
      "UPDATE users SET email = ?, email_key = ? WHERE id = ?",
    );
    swap.run(`old-${carol.email}`, `old-${carol.email}`, carol.userId);
    swap.run(carol.email, carol.email, eve.userId);
    const env = { DATABASE_PATH: target.databasePath };
    const promoted = await cliInProcess(
      ["users:role", "--email", carol.email, "--role", "admin"],
      env,
    );
    expect(promoted.code).toBe(1);
    expect(promoted.stderr).toContain("does not match its seal");
    swap.run(eve.email, eve.email, eve.userId);
    swap.run(carol.email, carol.email, carol.userId);
    const next = restarted(target);
    const signedIn = await send(next, "/api/auth/login", {
      body: { email: eve.email, password: STRONG_PASSWORD },
      peer: "10.66.2.1",
    });
    expect(signedIn.status).toBe(200);
    const { accessToken } = (await signedIn.json()) as { accessToken: string };
    expect((await send(next, "/api/admin/api-keys", { headers: bearer(accessToken) })).status).toBe(
      403,
    );
  });

  test("an admin whose row was tampered is still demoted by users:role, and their sessions end", async () => {
    const target = app();
    const admin = await signUp(target, { role: "admin" });
    target.db.$client.run("UPDATE users SET seal = NULL WHERE id = ?", [admin.userId]);
    const demoted = await cliInProcess(["users:role", "--email", admin.email, "--role", "user"], {
      DATABASE_PATH: target.databasePath,
    });
    expect(demoted.code).toBe(0);
    expect(demoted.stdout).toBe(`${admin.email} is now user`);
    expect(demoted.stderr).toContain("does not match its seal");
    const next = restarted(target);
    expect(
      (await send(next, "/api/admin/api-keys", { headers: bearer(admin.accessToken) })).status,
    ).toBe(401);
  });

  test("a user whose role was written admin in the file, demoted back by users:role, is told as it is: it matches its seal again and signs in (probe 32a F1)", async () => {
    const target = app();
    const user = await signUp(target);
    target.db.$client.run("UPDATE users SET role = 'admin' WHERE id = ?", [user.userId]);
    const env = { DATABASE_PATH: target.databasePath };
    const demoted = await cliInProcess(
      ["users:role", "--email", user.email, "--role", "user"],
      env,
    );
    expect(demoted.code).toBe(0);
    expect(demoted.stderr).toContain(
      "with the role it was sealed with, it matches it again and can sign in",
    );
    expect(demoted.stderr).not.toContain("cannot sign in");
    const next = restarted(target);
    const signedIn = await send(next, "/api/auth/login", {
      body: { email: user.email, password: STRONG_PASSWORD },
      peer: "10.66.3.1",
    });
    expect(signedIn.status).toBe(200);
  });
});

describe("what the CLI shows of tampered keys", () => {
  test("keys:list marks a key that fails its seal; keys:revoke of a bootstrap key says to remove it from API_KEYS", async () => {
    const bootstrap = generateApiKey("live");
    const target = buildTestApp({ env: { API_KEYS: `${bootstrap}:chat` } });
    cleanups.push(() => target.close());
    const made = createKey(target, ["chat"]);
    target.db.$client.run("UPDATE api_keys SET scopes = '[\"admin\"]' WHERE id = ?", [
      made.record.id,
    ]);
    const env = { DATABASE_PATH: target.databasePath, API_KEYS: `${bootstrap}:chat` };
    const listed = await cliInProcess(["keys:list"], env);
    const line = (id: string) => listed.stdout.split("\n").find((l) => l.startsWith(id)) ?? "";
    expect(line(made.record.id)).toContain(
      "refused (it or its owner's account does not match its seal",
    );
    const bootstrapId = target.services.apiKeys.list().find((k) => k.origin === "bootstrap")!.id;
    expect(line(bootstrapId)).toContain("  active  ");
    const revoked = await cliInProcess(["keys:revoke", bootstrapId], env);
    expect(revoked.code).toBe(0);
    expect(revoked.stderr).toBe("this key comes from API_KEYS: remove it from API_KEYS too");
  });
});

test("the admin API's key list marks a key that fails its seal, and one whose owner's account fails", async () => {
  const target = app();
  const admin = await signUp(target, { role: "admin" });
  const owner = await signUp(target);
  const widened = createKey(target, ["chat"]);
  const owned = createKey(target, ["chat"], owner.userId);
  const untouched = createKey(target, ["chat"]);
  target.db.$client.run("UPDATE api_keys SET scopes = '[\"admin\"]' WHERE id = ?", [
    widened.record.id,
  ]);
  target.db.$client.run("UPDATE users SET role = 'admin' WHERE id = ?", [owner.userId]);
  // Scopes that are not even JSON: listed as tampered, never a 500.
  const malformed = insertKey(target, generateApiKey("live"), { scopes: "chat", seal: "x" });
  const listed = await send(target, "/api/admin/api-keys", { headers: bearer(admin.accessToken) });
  expect(listed.status).toBe(200);
  const keys = ((await listed.json()) as { keys: { id: string; tampered: boolean }[] }).keys;
  const tampered = (id: string) => keys.find((key) => key.id === id)?.tampered;
  expect(tampered(widened.record.id)).toBe(true);
  expect(tampered(owned.record.id)).toBe(true);
  expect(tampered(untouched.record.id)).toBe(false);
  expect(tampered(malformed)).toBe(true);
  const cli = await cliInProcess(["keys:list"], { DATABASE_PATH: target.databasePath });
  expect(cli.code).toBe(0);
  // The CLI refuses what the API marks: a key whose owner's account fails too.
  const cliLine = (id: string) => cli.stdout.split("\n").find((line) => line.startsWith(id));
  for (const id of [malformed, widened.record.id, owned.record.id]) {
    expect(cliLine(id)).toContain("refused (it or its owner's account does not match its seal");
  }
  expect(cliLine(untouched.record.id)).toContain("  active  ");
  // And the keys it marks are the keys refused.
  expect((await asKey(target, widened.key)).me).toBe(401);
  expect((await asKey(target, owned.key)).me).toBe(401);
  expect((await asKey(target, untouched.key)).me).toBe(200);
});

test("a revocation feed cursor pushed ahead in the file hides no later logout: the token is refused at once", async () => {
  const clock = new ManualClock();
  const target = buildTestApp({ clock });
  cleanups.push(() => target.close());
  const alice = await signUp(target);
  // Used once: the token is in the cache, where only the feed can reach it.
  expect((await send(target, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    200,
  );
  target.db.$client.run(
    "INSERT INTO auth_revocations (id, kind, subject, created_at) VALUES (1000000, 'key', 'x', ?)",
    [clock.now()],
  );
  clock.advance(2_000);
  // The next request polls the feed: its cursor is now 1000000.
  expect((await send(target, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    200,
  );
  target.db.$client.run("DELETE FROM auth_revocations WHERE id = 1000000");
  target.db.$client.run(
    "UPDATE sqlite_sequence SET seq = (SELECT coalesce(max(id), 0) FROM auth_revocations) WHERE name = 'auth_revocations'",
  );
  clock.advance(2_000);
  const out = await send(target, "/api/auth/logout", {
    body: { refreshToken: alice.refreshToken },
    headers: bearer(alice.accessToken),
  });
  expect(out.status).toBe(204);
  // The logout's row has a small id again, below the cursor.
  const ids = target.db.$client
    .query<{ id: number }, []>("SELECT id FROM auth_revocations ORDER BY id")
    .all()
    .map((row) => row.id);
  expect(Math.max(...ids)).toBeLessThan(1000000);
  expect((await send(target, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    401,
  );
});

test("a revocation row deleted from the file before this process reads it: the cached token is refused within 30 s", async () => {
  const clock = new ManualClock();
  const target = buildTestApp({ clock });
  cleanups.push(() => target.close());
  const alice = await signUp(target);
  const me = () => send(target, "/api/auth/me", { headers: bearer(alice.accessToken) });
  expect((await me()).status).toBe(200);
  // Another process logs Alice out; someone with the file deletes the feed row before this one
  // polls it (and lowers the sequence, so no gap shows).
  const other = secondProcess(target, clock);
  cleanups.push(other.close);
  const out = await other.app.handle(
    new Request("http://localhost/api/auth/logout", {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer(alice.accessToken) },
      body: JSON.stringify({ refreshToken: alice.refreshToken }),
    }),
  );
  expect(out.status).toBe(204);
  target.db.$client.run("DELETE FROM auth_revocations");
  target.db.$client.run("UPDATE sqlite_sequence SET seq = 0 WHERE name = 'auth_revocations'");
  clock.advance(2_000);
  // The feed shows nothing: the cached token still answers…
  expect((await me()).status).toBe(200);
  clock.advance(29_000);
  // …until its session's row is read again.
  expect((await me()).status).toBe(401);
});

test("a trigger that keeps revocations out of the feed fails the logout instead", async () => {
  const target = app();
  const alice = await signUp(target);
  target.db.$client.run(
    "CREATE TRIGGER no_feed BEFORE INSERT ON auth_revocations BEGIN SELECT RAISE(IGNORE); END",
  );
  const logout = () =>
    send(target, "/api/auth/logout", {
      body: { refreshToken: alice.refreshToken },
      headers: bearer(alice.accessToken),
    });
  expect((await logout()).status).toBe(500);
  // The session is not half ended: the refresh token still refreshes until a logout takes.
  target.services.runMaintenance();
  expect((await logout()).status).toBe(204);
  expect((await send(target, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    401,
  );
});

describe("tamper reports", () => {
  test("each row once, a long id cut to 64 characters, and reports go on past the memory's bound", () => {
    const lines: Record<string, unknown>[] = [];
    const events: { detail?: Record<string, unknown> }[] = [];
    const report = tamperReporter({
      logger: { error: (fields) => lines.push(fields) },
      audit: { record: (event) => events.push(event) },
      limit: 2,
    });
    report("api_keys", "a");
    report("api_keys", "a");
    report("api_keys", "b");
    report("api_keys", "c");
    report("users", "x".repeat(300_000));
    expect(lines.map((line) => line.id)).toEqual(["a", "b", "c", `${"x".repeat(64)}…`]);
    expect(events.map((event) => event.detail?.id)).toEqual(lines.map((line) => line.id));
  });
});

/** A database at migration 0012 (before seals), as the previous release left it. */
function databaseBeforeSeals() {
  const dir = tempDir();
  cleanups.push(dir.remove);
  const folder = migrationsUpTo(dir.path, 12);
  const path = join(dir.path, "palisade.db");
  const db = openDatabase(path);
  applyMigrationsFrom(db, folder);
  return { dir, path, db };
}

async function oldRows(sqlite: import("bun:sqlite").Database) {
  const passwordHash = await Bun.password.hash(STRONG_PASSWORD, {
    algorithm: "argon2id",
    ...TEST_PASSWORD_HASHING,
  });
  sqlite.run(
    `INSERT INTO users (id, email, email_key, password_hash, role, created_at, updated_at)
     VALUES ('old-admin', 'old@example.test', 'old@example.test', ?, 'admin', 1, 1)`,
    [passwordHash],
  );
  const key = generateApiKey("live");
  sqlite.run(
    `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin)
     VALUES ('old-key', 'old', ?, ?, '["chat","admin"]', 'old-admin', 1, 'api')`,
    [keyPrefix(key), hashApiKey(key)],
  );
  return { key };
}

const AUDIT_SECRET_KEY = "seal-upgrade-test-key-6c1f0a9e3d7b2c5f8e4a1b0d9c";

describe("upgrading a database stored before seals", () => {
  test("only the call that adds the columns seals, and only what was there", async () => {
    const { db } = databaseBeforeSeals();
    cleanups.push(() => db.$client.close());
    await oldRows(db.$client);
    const seal = createCredentialSeal(AUDIT_SECRET_KEY);
    const sealing = credentialSealing(seal);
    const status = applyMigrations(db, sealing.companions);
    expect(status.appliedNow).toEqual(migrationTagsFrom(13));
    expect(status.appliedNow.slice(0, 3)).toEqual([
      SEALS_MIGRATION,
      OUTBOX_SEALS_MIGRATION,
      CHAT_SEALS_MIGRATION,
    ]);
    expect(sealing.sealed()).toEqual({ accounts: 1, keys: 1, sessions: 0 });
    db.$client.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, created_at, updated_at)
       VALUES ('later', 'later@example.test', 'later@example.test', 'x', 'admin', 2, 2)`,
    );
    const later = credentialSealing(seal);
    const again = applyMigrations(db, later.companions);
    expect(again.appliedNow).toEqual([]);
    expect(later.sealed()).toBeNull();
    const unsealed = db.$client
      .query<{ id: string }, []>("SELECT id FROM users WHERE seal IS NULL")
      .all();
    expect(unsealed).toEqual([{ id: "later" }]);
  });

  test("rows whose rowids a JS number cannot hold are each sealed as themselves (probe 50a F2's class)", async () => {
    const { db } = databaseBeforeSeals();
    cleanups.push(() => db.$client.close());
    for (const [rowid, id] of [
      [9007199254740992n, "at-2-53"],
      [9007199254740993n, "past-2-53"],
    ] as const) {
      db.$client
        .query(
          `INSERT INTO users (rowid, id, email, email_key, password_hash, role, created_at, updated_at)
           VALUES (?1, ?2, ?3, ?3, 'x', 'user', 1, 1)`,
        )
        .run(rowid, id, `${id}@example.test`);
    }
    const seal = createCredentialSeal(AUDIT_SECRET_KEY);
    applyMigrations(db, credentialSealing(seal).companions);
    const rows = db.$client
      .query<
        {
          id: string;
          email: string;
          emailKey: string;
          passwordHash: string;
          role: "user";
          seal: string | null;
        },
        []
      >(
        "SELECT id, email, email_key AS emailKey, password_hash AS passwordHash, role, seal FROM users ORDER BY id",
      )
      .all();
    expect(rows.map((row) => [row.id, row.seal])).toEqual(
      rows.map((row) => [row.id, seal.account(row)]),
    );
  });

  test("db:migrate seals them and says so; a second run seals nothing", async () => {
    const { path, db } = databaseBeforeSeals();
    const { key } = await oldRows(db.$client);
    db.$client.close();
    const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY };
    const first = await cliInProcess(["db:migrate"], env);
    expect(first.code).toBe(0);
    expect(first.stderr).toBe(
      [
        "sealed the credentials stored before this release (1 accounts, 1 API keys, 0 sessions); rows written into the file from now on are refused",
        "sealed the payment lineage of the 1 API keys stored before this release (0 continue a rotated key's); a key's lineage written into the file from now on reaches no payments",
        "sealed the rotation mark of the 1 API keys stored before this release (0 were rotated); a replaced_by written into the file from now on is refused, and a rotated key stays rotated",
      ].join("\n"),
    );
    const second = await cliInProcess(["db:migrate"], env);
    expect(second.code).toBe(0);
    expect(second.stderr).toBe("");
    const file = openDatabase(path);
    cleanups.push(() => file.$client.close());
    // Audited as a start audits it, every count kept.
    const audited = file.$client
      .query("SELECT actor, detail FROM audit_events WHERE type = 'auth.credentials_sealed'")
      .all();
    expect(audited).toEqual([
      { actor: "system", detail: JSON.stringify({ accounts: 1, keys: 1, sessions: 0 }) },
    ]);
    const row = file.$client
      .query<{ seal: string }, []>("SELECT seal FROM api_keys WHERE id = 'old-key'")
      .get()!;
    const seal = createCredentialSeal(AUDIT_SECRET_KEY);
    const expected = seal.apiKey({
      id: "old-key",
      prefix: keyPrefix(key),
      secretHash: hashApiKey(key),
      scopes: '["chat","admin"]',
      userId: "old-admin",
      expiresAt: null,
      revokedAt: null,
      origin: "api",
    });
    expect(row.seal).toBe(expected);
  });

  test("a sealing cut short leaves the file unmigrated; the next start migrates and seals", async () => {
    const { db } = databaseBeforeSeals();
    cleanups.push(() => db.$client.close());
    await oldRows(db.$client);
    const seal = createCredentialSeal(AUDIT_SECRET_KEY);
    const failing = new Map([
      [
        SEALS_MIGRATION,
        (migrated: typeof db) => {
          credentialSealing(seal).companions.get(SEALS_MIGRATION)!(migrated);
          throw new Error("killed half way");
        },
      ],
    ]);
    expect(() => applyMigrations(db, failing)).toThrow("killed half way");
    const columns = db.$client.query<{ name: string }, []>("PRAGMA table_info(users)").all();
    expect(columns.map((c) => c.name)).not.toContain("seal");
    expect(db.$client.query("SELECT count(*) AS n FROM __drizzle_migrations").get()).toEqual({
      n: 13,
    });
    const sealing = credentialSealing(seal);
    expect(applyMigrations(db, sealing.companions).appliedNow).toEqual(migrationTagsFrom(13));
    expect(sealing.sealed()).toEqual({ accounts: 1, keys: 1, sessions: 0 });
  });

  test("a start that stops after sealing (API_KEYS refused) has already said it sealed", async () => {
    const { path, db } = databaseBeforeSeals();
    const { key } = await oldRows(db.$client);
    db.$client.close();
    // The stored key is one made through the API: listing it in API_KEYS is refused at start.
    const start = await runToExit(["bun", "run", "src/index.ts"], {
      DATABASE_PATH: path,
      AUDIT_SECRET_KEY,
      PORT: "0",
      API_KEYS: key,
    });
    expect(start.code).toBe(2);
    expect(start.stderr).toContain("API_KEYS");
    expect(start.stdout).toContain("sealed the credentials stored before this release");
  });

  test("migration 0022 writes and seals every key's lineage from the chains already there, in its transaction; only it does", () => {
    const dir = tempDir();
    cleanups.push(dir.remove);
    const db = openDatabase(join(dir.path, "rotated.db"));
    cleanups.push(() => db.$client.close());
    applyMigrationsFrom(db, migrationsUpTo(dir.path, 21));
    const insert = db.$client.prepare(
      `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin, replaced_by)
       VALUES (?, 'shop', ?, 'h', '["payments"]', NULL, 1, 'api', ?)`,
    );
    // k1 rotated into k2, k2 into k3; k4 alone; k5 and k6 in a cycle no rotation makes.
    insert.run("k1", "pal_live_k1", "k2");
    insert.run("k2", "pal_live_k2", "k3");
    insert.run("k3", "pal_live_k3", null);
    insert.run("k4", "pal_live_k4", null);
    insert.run("k5", "pal_live_k5", "k6");
    insert.run("k6", "pal_live_k6", "k5");
    // Two bootstrap keys: one that owns nothing yet (its secret's lineage), one whose
    // Idempotency-Key names it (keeps its id).
    const bootstrap = db.$client.prepare(
      `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin)
       VALUES (?, 'b', ?, ?, '["payments"]', NULL, 1, 'bootstrap')`,
    );
    bootstrap.run("b1", "pal_live_b1", "a".repeat(64));
    bootstrap.run("b2", "pal_live_b2", "b".repeat(64));
    db.$client.run(
      `INSERT INTO payment_idempotency_keys (owner, key, request_hash, state, claimed_at)
       VALUES ('key:b2', 'order-1', 'h', 'pending', 1)`,
    );
    const seal = createCredentialSeal(AUDIT_SECRET_KEY);
    const sealing = lineageSealing(seal);
    expect(applyMigrations(db, sealing.companions).appliedNow).toEqual(migrationTagsFrom(22));
    expect(sealing.sealed()).toEqual({ keys: 8, rotated: 4 });
    const lineages = () =>
      db.$client
        .query<{ id: string; lineage: string | null; lineageSeal: string | null }, []>(
          "SELECT id, lineage, lineage_seal AS lineageSeal FROM api_keys ORDER BY id",
        )
        .all();
    expect(lineages().map((row) => [row.id, row.lineage, seal.intact.lineage(row)])).toEqual([
      ["b1", bootstrapLineage("a".repeat(64), seal), true],
      ["b2", "b2", true],
      ["k1", "k1", true],
      ["k2", "k1", true],
      ["k3", "k1", true],
      ["k4", "k4", true],
      ["k5", "k6", true],
      ["k6", "k5", true],
    ]);
    insert.run("k7", "pal_live_k7", null);
    const later = lineageSealing(seal);
    expect(applyMigrations(db, later.companions).appliedNow).toEqual([]);
    expect(later.sealed()).toBeNull();
    expect(seal.intact.lineage(lineages().at(-1)!)).toBe(false);
  });

  test("a new database has nothing to seal: nothing is said, but each sealing is recorded with its zeros", () => {
    const dir = tempDir();
    cleanups.push(dir.remove);
    const db = openDatabase(join(dir.path, "new.db"));
    cleanups.push(() => db.$client.close());
    const sealing = upgradeSealing(AUDIT_SECRET_KEY);
    const status = applyMigrations(db, sealing.companions);
    expect(status.appliedNow).toContain(SEALS_MIGRATION);
    expect(
      sealing.sealed().map(({ message, event }) => [event.type, message, event.detail]),
    ).toEqual([
      ["auth.credentials_sealed", null, { accounts: 0, keys: 0, sessions: 0 }],
      ["whatsapp.outbox_sealed", null, { rows: 0, givenUp: 0 }],
      ["chat.history_sealed", null, { conversations: 0, messages: 0 }],
      ["payment.ledger_sealed", null, { payments: 0, idempotencyKeys: 0 }],
      ["ip.blocks_sealed", null, { blocks: 0 }],
      ["auth.lineages_sealed", null, { keys: 0, rotated: 0 }],
      ["auth.successors_sealed", null, { keys: 0, rotated: 0, actingForUsers: 0 }],
      ["payment.undecided_sealed", null, { payments: 0 }],
      ["whatsapp.outbox_offsets_sealed", null, { replies: 0 }],
    ]);
  });

  test("the real start seals the old credentials once: they work; a row added later does not", async () => {
    const { path, db } = databaseBeforeSeals();
    const { key } = await oldRows(db.$client);
    db.$client.close();
    const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY };

    const first = await startService(env);
    try {
      expect(first.stdout()).toContain('"accounts":1,"keys":1,"sessions":0');
      expect(first.stdout()).toContain("sealed the credentials stored before this release");
      const me = await fetch(new URL("/api/auth/me", first.url), {
        headers: { "x-api-key": key },
      });
      expect(me.status).toBe(200);
      const signIn = await fetch(new URL("/api/auth/login", first.url), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "old@example.test", password: STRONG_PASSWORD }),
      });
      expect(signIn.status).toBe(200);
    } finally {
      expect(await first.stop()).toBe(0);
    }

    // Someone with the file adds a key the old way while the service is down.
    const file = openDatabase(path);
    const forged = generateApiKey("live");
    file.$client.run(
      `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin)
       VALUES ('late-key', 'late', ?, ?, '["admin"]', NULL, 2, 'api')`,
      [keyPrefix(forged), hashApiKey(forged)],
    );
    const audited = file.$client
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM audit_events WHERE type = 'auth.credentials_sealed'",
      )
      .get()!.n;
    expect(audited).toBe(1);
    file.$client.close();

    const second = await startService(env);
    try {
      expect(second.stdout()).not.toContain("sealed the credentials");
      const me = await fetch(new URL("/api/auth/me", second.url), {
        headers: { "x-api-key": forged },
      });
      expect(me.status).toBe(401);
      const old = await fetch(new URL("/api/auth/me", second.url), {
        headers: { "x-api-key": key },
      });
      expect(old.status).toBe(200);
    } finally {
      expect(await second.stop()).toBe(0);
    }
  });

  test("a start on a file put back before the seals seals it again, and says that as tampering: an error line, db.resealed audited and counted for the alert", async () => {
    const { path, db } = databaseBeforeSeals();
    await oldRows(db.$client);
    db.$client.close();
    const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY };
    const first = await startService(env);
    expect(first.stdout()).not.toContain("db.resealed");
    expect(await first.stop()).toBe(0);

    // Someone with the file puts it back into its pre-0013 shape and adds an admin key the old way.
    const file = openDatabase(path);
    putBackBefore(file.$client, 13);
    const forged = generateApiKey("live");
    file.$client.run(
      `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin)
       VALUES ('planted', 'planted', ?, ?, '["admin","metrics"]', NULL, 3, 'api')`,
      [keyPrefix(forged), hashApiKey(forged)],
    );
    file.$client.close();

    const second = await startService(env);
    try {
      // The upgrade cannot tell the planted row from an old one (it is sealed: that is the attack),
      // but the file's audit log holds the first sealing, so this one is said as what it is.
      const lines = second
        .stdout()
        .split("\n")
        .filter((line) => line.includes("sealed by this release before"))
        .map((line) => JSON.parse(line));
      // Every later sealing is said again too: the first start recorded each, rows or none.
      expect(lines).toEqual([
        expect.objectContaining({
          level: "error",
          kind: "auth.credentials_sealed",
          earlier: 1,
          accounts: 1,
          keys: 2,
          sessions: 0,
        }),
        expect.objectContaining({ kind: "whatsapp.outbox_sealed", earlier: 1, rows: 0 }),
        expect.objectContaining({ kind: "chat.history_sealed", earlier: 1, conversations: 0 }),
        expect.objectContaining({ kind: "payment.ledger_sealed", earlier: 1, payments: 0 }),
        expect.objectContaining({ kind: "ip.blocks_sealed", earlier: 1, blocks: 0 }),
        expect.objectContaining({ kind: "auth.lineages_sealed", earlier: 1, rotated: 0 }),
        expect.objectContaining({ kind: "auth.successors_sealed", earlier: 1, rotated: 0 }),
        expect.objectContaining({ kind: "payment.undecided_sealed", earlier: 1, payments: 0 }),
        expect.objectContaining({
          kind: "whatsapp.outbox_offsets_sealed",
          earlier: 1,
          replies: 0,
        }),
      ]);
      const metrics = await fetch(new URL("/metrics", second.url), {
        headers: { "x-api-key": forged },
      });
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toMatch(/^audit_events_total\{type="db\.resealed"\} 9$/m);
    } finally {
      expect(await second.stop()).toBe(0);
    }
    const after = openDatabase(path);
    cleanups.push(() => after.$client.close());
    const rows = after.$client
      .query<{ actor: string; outcome: string; detail: string }, []>(
        "SELECT actor, outcome, detail FROM audit_events WHERE type = 'db.resealed'",
      )
      .all();
    expect(rows.map((row) => ({ ...row, detail: JSON.parse(row.detail) }))[0]).toEqual({
      actor: "system",
      outcome: "failure",
      detail: { kind: "auth.credentials_sealed", earlier: 1, accounts: 1, keys: 2, sessions: 0 },
    });
    expect(rows).toHaveLength(9);
  });
});

test("the bearer form of a forged key is refused too", async () => {
  const target = app();
  const key = generateApiKey("live");
  insertKey(target, key, { scopes: '["admin","metrics"]', seal: null });
  const me = await send(target, "/api/auth/me", { headers: bearer(key) });
  expect(me.status).toBe(401);
  // The same route takes a genuine key in that form.
  const genuine = createKey(target, ["chat"]);
  expect((await send(target, "/api/auth/me", { headers: bearer(genuine.key) })).status).toBe(200);
});

test("a value written into the file that a response's schema refuses is a 500 logged with its field, never a 422 blaming the request (probe 14g G3)", async () => {
  // The app's own lists show such a value as the file holds it (probe 46b F1): a route that does
  // not is what this holds to.
  let target: TestApp | null = null;
  target = appClosedAfter(cleanups, {
    extraFeatures: [uncheckedStoredValue(() => target!.db.$client)],
  });
  const admin = await signUp(target, { role: "admin" });
  const { record } = createKey(target, ["chat"]);
  // Not a sealed column: bookkeeping. SQLite stores 9e999 as Infinity, which no integer schema takes.
  target.db.$client.run("UPDATE api_keys SET last_used_at = 9e999 WHERE id = ?", [record.id]);
  const listed = await send(target, UNCHECKED_ROUTE, { headers: bearer(admin.accessToken) });
  expect(listed.status).toBe(500);
  const problem = (await listed.json()) as { code: string; errors?: unknown };
  expect(problem.code).toBe("INTERNAL");
  expect(problem.errors).toBeUndefined();
  const line = target.logs.entries.find(
    (entry) => entry.msg === "a response did not match its schema",
  );
  expect(line).toMatchObject({ route: UNCHECKED_ROUTE });
  expect(JSON.stringify(line)).toContain("lastUsedAt");
});
