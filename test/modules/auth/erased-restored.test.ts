/**
 * An erased account's rows copied back into the file from a backup (seal and all) by someone who
 * can write the file but does not hold AUDIT_SECRET_KEY (probe 79c F1): the erased admin signed in
 * again, made keys and blocks, and every event was filed under the erasure's pseudonym with no
 * address; neither the service nor `db:verify` said anything. The audit log's record of the
 * erasure is what tells such a row from a living one.
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, STRONG_PASSWORD, signUp } from "../../support/auth";
import { cliInProcess as cli } from "../../support/cli";
import { copyBack, rowsOf } from "../../support/file-rows";
import { startOn } from "../../support/restart";

let cleanups: (() => unknown)[] = [];
afterEach(() => {
  for (const step of cleanups.reverse()) step();
  cleanups = [];
});

function fresh(): TestApp {
  const target = buildTestApp();
  cleanups.push(() => target.close());
  return target;
}

/**
 * An admin with an admin key erases itself, and its account, sessions and key rows are copied back
 * from before (seals and all), as a backup restored over them would; `alsoThen` runs on the file
 * after that (more tampering). Then the next start on the file.
 */
async function erasedAdminCopiedBack(alsoThen: (file: Database) => void = () => {}) {
  const first = fresh();
  const admin = await signUp(first, { role: "admin" });
  const created = await send(first, "/api/admin/api-keys", {
    headers: bearer(admin.accessToken),
    body: { name: "ops", scopes: ["admin"] },
  });
  expect(created.status).toBe(201);
  const { key, apiKey } = (await created.json()) as { key: string; apiKey: { id: string } };
  const path = first.databasePath;
  const backup = {
    users: rowsOf(path, "users", "id = ?", admin.userId),
    api_keys: rowsOf(path, "api_keys", "id = ?", apiKey.id),
    refresh_families: rowsOf(path, "refresh_families", "user_id = ?", admin.userId),
    refresh_tokens: rowsOf(path, "refresh_tokens", "user_id = ?", admin.userId),
  };
  expect(backup.users.length).toBe(1);
  expect(backup.api_keys[0]).toMatchObject({ revoked_at: null });
  const erased = await send(first, "/api/me", {
    method: "DELETE",
    headers: bearer(admin.accessToken),
  });
  expect(erased.status).toBe(204);
  first.services.audit.flush();
  for (const [table, rows] of Object.entries(backup)) copyBack(path, table, rows);
  const file = new Database(path);
  try {
    alsoThen(file);
  } finally {
    file.close();
  }
  const next = startOn(path);
  let open = true;
  const close = () => {
    if (open) next.close();
    open = false;
  };
  cleanups.push(close);
  return { admin, key, apiKey, path, next, close };
}

/** What the next start answers the copied-back admin's password, refresh token and key. */
async function refusedEverywhere(scenario: Awaited<ReturnType<typeof erasedAdminCopiedBack>>) {
  const { admin, key, next } = scenario;
  const login = await send(next, "/api/auth/login", {
    body: { email: admin.email, password: STRONG_PASSWORD },
    peer: "10.7.0.1",
  });
  expect(login.status).toBe(401);
  const refresh = await send(next, "/api/auth/refresh", {
    body: { refreshToken: admin.refreshToken },
    peer: "10.7.0.2",
  });
  expect(refresh.status).toBe(401);
  const byKey = await send(next, "/api/admin/blocks", { headers: { "x-api-key": key } });
  expect(byKey.status).toBe(401);
}

test("an erased admin's account, session and key copied back from a backup are refused, reported and named by db:verify", async () => {
  const scenario = await erasedAdminCopiedBack();
  const { admin, apiKey, path, next } = scenario;
  await refusedEverywhere(scenario);

  next.services.audit.flush();
  const reported = next.db.$client
    .query("SELECT detail FROM audit_events WHERE type = 'auth.credential_tampered' ORDER BY id")
    .all() as { detail: string }[];
  // Filed under the erasure's pseudonym, as the audit log names an erased principal anywhere.
  const { actor: pseudonym, id: erasure } = next.db.$client
    .query("SELECT actor, id FROM audit_events WHERE type = 'privacy.erased'")
    .get() as { actor: string; id: number };
  expect(reported.map((row) => JSON.parse(row.detail))).toEqual([
    { table: "users", id: pseudonym, part: "erased" },
    { table: "api_keys", id: pseudonym, part: "erased" },
  ]);
  expect(next.logs.text).toContain("a credential row of an erased account or key");
  // Nothing succeeded under the erasure's pseudonym since it.
  const since = next.db.$client
    .query("SELECT type FROM audit_events WHERE id > ?1 AND actor = ?2 AND outcome = 'success'")
    .all(erasure, pseudonym);
  expect(since).toEqual([]);
  scenario.close();

  const verified = await cli(["db:verify"], { DATABASE_PATH: path });
  expect(verified.code).not.toBe(0);
  expect(verified.stderr + verified.stdout).toContain(
    `users ${admin.userId}: of an erased account or key, copied back from before its erasure`,
  );
  expect(verified.stderr + verified.stdout).toContain(
    `api_keys ${apiKey.id}: of an erased account or key, copied back from before its erasure`,
  );
  // The listings say it may be that, not only a row written into the file (probe 80a F2).
  const listed = await cli(["users:list"], { DATABASE_PATH: path });
  expect(listed.stdout).toContain(
    "refused (does not match its seal, or an erased account's copied back",
  );
});

test("users:role refuses an erased account's row copied back, naming no one in the audit log; users:erase erases it again (probe 80a F2)", async () => {
  const scenario = await erasedAdminCopiedBack();
  const { admin, path, close } = scenario;
  close();
  const rolesChanged = () => {
    const file = new Database(path, { readonly: true });
    try {
      return file
        .query("SELECT detail FROM audit_events WHERE type = 'admin.user.role_changed'")
        .all();
    } finally {
      file.close();
    }
  };
  const before = rolesChanged();
  const demoted = await cli(["users:role", "--email", admin.email, "--role", "user"], {
    DATABASE_PATH: path,
  });
  expect(demoted.code).not.toBe(0);
  expect(demoted.stderr).toContain(`the account of ${admin.email} was erased`);
  // Unchanged, seal and all: db:verify still names it for what it is.
  expect(rowsOf(path, "users", "id = ?", admin.userId)[0]).toMatchObject({ role: "admin" });
  expect(rolesChanged()).toEqual(before);
  const verified = await cli(["db:verify"], { DATABASE_PATH: path });
  expect(verified.stderr + verified.stdout).toContain(
    `users ${admin.userId}: of an erased account or key, copied back from before its erasure`,
  );

  const erased = await cli(["users:erase", "--email", admin.email, "--yes"], {
    DATABASE_PATH: path,
  });
  expect(erased.code).toBe(0);
  expect(erased.stderr).toContain("had been erased before");
  expect(rowsOf(path, "users", "id = ?", admin.userId)).toEqual([]);
  expect(rowsOf(path, "api_keys", "user_id = ?", admin.userId)).toEqual([]);
  expect(
    rowsOf(path, "audit_events", "actor = ? OR detail LIKE ?", admin.userId, `%${admin.userId}%`),
  ).toEqual([]);
});

test("with the erasure's record deleted from the file too, the chained privacy.erased event still refuses the copied-back account and its key (probe 80a F1)", async () => {
  const scenario = await erasedAdminCopiedBack((file) => {
    expect(file.run("DELETE FROM audit_erased_actors").changes).toBe(2);
  });
  const { admin, path } = scenario;
  await refusedEverywhere(scenario);
  const verified = await cli(["db:verify"], { DATABASE_PATH: path });
  expect(verified.code).not.toBe(0);
  expect(verified.stderr + verified.stdout).toContain(
    `users ${admin.userId}: of an erased account or key, copied back from before its erasure`,
  );
});

test("a file an erasure left verifies whole, and the living accounts still sign in", async () => {
  const target = fresh();
  const alice = await signUp(target);
  const bob = await signUp(target);
  const key = target.services.apiKeys.create(
    { name: "alice bot", scopes: ["chat"], userId: alice.userId },
    "test",
  );
  expect(
    (await send(target, "/api/me", { method: "DELETE", headers: bearer(alice.accessToken) }))
      .status,
  ).toBe(204);
  expect(rowsOf(target.databasePath, "api_keys", "id = ?", key.record.id)).toEqual([]);
  expect((await send(target, "/api/auth/me", { headers: bearer(bob.accessToken) })).status).toBe(
    200,
  );
  target.services.audit.flush();
  const verified = await cli(["db:verify"], { DATABASE_PATH: target.databasePath });
  expect(verified.stdout).toContain("seals intact");
  expect(verified.code).toBe(0);
});
