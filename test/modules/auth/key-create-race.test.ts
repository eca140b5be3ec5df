/**
 * A key's creation reads its owner's role in the transaction that inserts the key. Another process
 * sharing the file (its erasure or demotion of the owner) commits before that transaction or after
 * it, never between the check and the insert: a creation racing an erasure answers 401 or 201,
 * never a 500 from the insert's foreign key (probe 14b F1), and never leaves a key beyond the role.
 */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { ApiKeyService, type KeyRefusal, KeyRefused } from "../../../src/modules/auth/api-keys";
import type { Scope } from "../../../src/plugins/auth/principal";
import type { CredentialSeal } from "../../../src/plugins/auth/seal";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import { cleanupsAfterEach } from "../../support/cleanups";

const cleanups = cleanupsAfterEach();

function app(): TestApp {
  const target = buildTestApp();
  cleanups.push(() => target.close());
  return target;
}

/** A second connection to the file, as another process has: it waits for no lock. */
function otherProcess(target: TestApp): Database {
  const other = new Database(target.databasePath);
  other.run("PRAGMA busy_timeout = 0");
  other.run("PRAGMA foreign_keys = ON");
  cleanups.push(() => other.close());
  return other;
}

/**
 * The key service of the app, with `between` run after the owner's role has been read and before
 * the key row is written (its seal is computed there).
 */
function keysWithPause(target: TestApp, between: () => void): ApiKeyService {
  const { services } = target;
  const seal: CredentialSeal = {
    ...services.credentialSeal,
    apiKey: (row) => {
      between();
      return services.credentialSeal.apiKey(row);
    },
  };
  return new ApiKeyService(
    target.db.$client,
    services.clock,
    services.audit,
    services.credentials,
    { seal },
  );
}

/** What `create` refused for a key of `userId` with these scopes (a key made is a failure). */
function refusalOf(target: TestApp, userId: string, scopes: Scope[]): KeyRefusal {
  try {
    target.services.apiKeys.create(
      { name: "refused", scopes, userId, expiresAt: null },
      `user:${userId}`,
    );
  } catch (error) {
    if (error instanceof KeyRefused) return error.refusal;
    throw error;
  }
  throw new Error("the key was created");
}

function keysOf(target: TestApp, userId: string): number {
  const row = target.db.$client
    .query("SELECT count(*) AS n FROM api_keys WHERE user_id = ?")
    .get(userId) as { n: number };
  return row.n;
}

describe("creating a key while another process erases or demotes its owner", () => {
  test("the other process cannot erase the owner between the role check and the insert", async () => {
    const target = app();
    const admin = await signUp(target, { role: "admin" });
    const other = otherProcess(target);
    const attempts: string[] = [];
    const keys = keysWithPause(target, () => {
      try {
        other.run("DELETE FROM users WHERE id = ?", [admin.userId]);
        attempts.push("erased");
      } catch (error) {
        attempts.push((error as { code?: string }).code ?? String(error));
      }
    });

    const created = keys.create(
      { name: "racing", scopes: ["admin"], userId: admin.userId, expiresAt: null },
      `user:${admin.userId}`,
    );
    // The erasure found the file locked by the creation's transaction: it waits (busy_timeout) in
    // a real process, and then erases the account and its keys together.
    expect(attempts).toEqual(["SQLITE_BUSY"]);
    expect(created.record.userId).toBe(admin.userId);
    expect(keysOf(target, admin.userId)).toBe(1);
  });

  test("an owner erased just before the transaction is refused as gone, not failed on the foreign key", async () => {
    const target = app();
    const admin = await signUp(target, { role: "admin" });
    const other = otherProcess(target);
    other.run("DELETE FROM refresh_families WHERE user_id = ?", [admin.userId]);
    other.run("DELETE FROM users WHERE id = ?", [admin.userId]);

    expect(refusalOf(target, admin.userId, ["chat"])).toEqual({ code: "NO_OWNER" });
    expect(keysOf(target, admin.userId)).toBe(0);
  });

  test("a demotion that commits first is seen by the creation: no admin key for a user", async () => {
    const target = app();
    const admin = await signUp(target, { role: "admin" });
    // The demotion commits (the row resealed, as users:role does) just before the transaction.
    target.services.auth.setRole(admin.userId, "user", "test");
    expect(refusalOf(target, admin.userId, ["admin"])).toEqual({
      code: "SCOPES_EXCEED_ROLE",
      role: "user",
      scopes: ["admin"],
    });
    expect(keysOf(target, admin.userId)).toBe(0);
  });

  test("over HTTP: a cached admin key whose owner another process erased gets 401, and no key is made", async () => {
    const target = app();
    const admin = await signUp(target, { role: "admin" });
    const made = await send(target, "/api/admin/api-keys", {
      headers: bearer(admin.accessToken),
      body: { name: "minting", scopes: ["admin"] },
    });
    expect(made.status).toBe(201);
    const { key } = (await made.json()) as { key: string };
    // Verified once, so this process holds it in its cache (the feed tells it within a second).
    expect((await send(target, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(
      200,
    );

    const other = otherProcess(target);
    other.run("DELETE FROM users WHERE id = ?", [admin.userId]);
    const response = await send(target, "/api/admin/api-keys", {
      headers: { "x-api-key": key },
      body: { name: "after-erasure", scopes: ["chat"] },
    });
    expect(response.status).toBe(401);
    const problem = (await response.json()) as { code: string };
    expect(problem.code).toBe("UNAUTHENTICATED");
    expect(
      target.db.$client
        .query("SELECT count(*) AS n FROM api_keys WHERE name = 'after-erasure'")
        .get(),
    ).toEqual({ n: 0 });
  });
});
