/**
 * `users:erase`: an operator erases an account as `DELETE /api/me` does, for a user who cannot sign
 * in to do it (a lost password, or an account row that fails its seal). It asks for `--yes` before
 * doing anything, then revokes the sessions and keys, deletes the data, pseudonymises the audit
 * rows (the chain still verifies) and audits the erasure as the operator's.
 */
import { describe, expect, test } from "bun:test";
import { AuditKeys } from "../../src/plugins/audit/chain";
import { verifyAuditChain } from "../../src/plugins/audit/log";
import { secondProcess, send, type TestApp } from "../support/app";
import { bearer, createKey, STRONG_PASSWORD, signUp } from "../support/auth";
import { appClosedAfter, cleanupsAfterEach } from "../support/cleanups";
import { cliInProcess } from "../support/cli";

const cleanups = cleanupsAfterEach();

const AUDIT_SECRET_KEY = "users-erase-test-audit-key-0123456789abcdef";

const app = (): TestApp => appClosedAfter(cleanups, { env: { AUDIT_SECRET_KEY } });

function cli(target: TestApp, args: string[]) {
  return cliInProcess(args, { DATABASE_PATH: target.databasePath, AUDIT_SECRET_KEY });
}

/** The file as the next process sees it (no cache of this one's). */
function restarted(target: TestApp) {
  const next = secondProcess(target);
  cleanups.push(next.close);
  return { ...target, app: next.app, services: next.services };
}

const count = (target: TestApp, sql: string, ...params: string[]) =>
  (target.db.$client.query(sql).get(...params) as { n: number }).n;

describe("users:erase", () => {
  test("without --yes it says what it would erase and erases nothing", async () => {
    const target = app();
    const alice = await signUp(target, { email: "alice@example.test" });
    const result = await cli(target, ["users:erase", "--email", "alice@example.test"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(
      `palisade users:erase: this erases the account of alice@example.test (${alice.userId}) and everything held about it, for good; add --yes to erase it`,
    );
    expect(count(target, "SELECT count(*) AS n FROM users WHERE id = ?", alice.userId)).toBe(1);
    const me = await send(restarted(target), "/api/auth/me", {
      headers: bearer(alice.accessToken),
    });
    expect(me.status).toBe(200);
  });

  test("erases as DELETE /api/me does: sessions and keys revoked, data gone, audit rows pseudonymised, the chain intact", async () => {
    const target = app();
    const alice = await signUp(target, { email: "alice@example.test" });
    const bob = await signUp(target, { email: "bob@example.test" });
    const { key } = createKey(target, ["chat"], alice.userId);
    const chat = await send(target, "/api/chat", {
      headers: bearer(alice.accessToken),
      body: { message: "hello" },
    });
    expect(chat.status).toBe(200);
    const conversations = () =>
      count(
        target,
        "SELECT count(*) AS n FROM chat_conversations WHERE owner_kind = 'user' AND owner_id = ?",
        alice.userId,
      );
    expect(conversations()).toBe(1);
    target.services.audit.flush();

    // Any spelling of the address finds the account, as a sign-in does; the account is named as
    // it holds its address, before and after (probe 85c F2: the operator's spelling was echoed).
    const asked = await cli(target, ["users:erase", "--email", "ALICE@Example.test"]);
    expect(asked.stderr).toBe(
      `palisade users:erase: this erases the account of alice@example.test (${alice.userId}) and everything held about it, for good; add --yes to erase it`,
    );
    const result = await cli(target, ["users:erase", "--email", "ALICE@Example.test", "--yes"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(
      `erased alice@example.test (${alice.userId}): sessions and API keys revoked, data deleted, audit rows pseudonymised`,
    );
    expect(result.stderr).toBe("");

    const next = restarted(target);
    expect((await send(next, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
      401,
    );
    expect((await send(next, "/api/auth/me", { headers: { "x-api-key": key } })).status).toBe(401);
    const refresh = await send(next, "/api/auth/refresh", {
      body: { refreshToken: alice.refreshToken },
    });
    expect(refresh.status).toBe(401);
    const login = await send(next, "/api/auth/login", {
      body: { email: alice.email, password: STRONG_PASSWORD },
    });
    expect(login.status).toBe(401);
    expect((await send(next, "/api/auth/me", { headers: bearer(bob.accessToken) })).status).toBe(
      200,
    );

    expect(count(target, "SELECT count(*) AS n FROM users WHERE id = ?", alice.userId)).toBe(0);
    expect(conversations()).toBe(0);
    const dump = JSON.stringify(
      target.db.$client.query("SELECT actor, ip, detail FROM audit_events").all(),
    );
    expect(dump).not.toContain(`user:${alice.userId}`);
    expect(dump).not.toContain(alice.email);
    expect(dump).toContain(`user:${bob.userId}`);
    const erased = target.db.$client
      .query<{ actor: string; detail: string }, []>(
        "SELECT actor, detail FROM audit_events WHERE type = 'privacy.erased'",
      )
      .all();
    expect(erased).toHaveLength(1);
    expect(erased[0]!.actor).toStartWith("erased:");
    expect(JSON.parse(erased[0]!.detail)).toEqual({ by: "operator" });
    expect(verifyAuditChain(target.db.$client, new AuditKeys(AUDIT_SECRET_KEY)).ok).toBe(true);
  });

  test("an account whose row fails its seal (it cannot sign in) is erased all the same, and the operator told", async () => {
    const target = app();
    const alice = await signUp(target, { email: "alice@example.test" });
    const { key } = createKey(target, ["chat"], alice.userId);
    // Someone with the file swapped in a password hash: the account now signs nobody in.
    target.db.$client.run("UPDATE users SET password_hash = 'x' WHERE id = ?", [alice.userId]);
    const login = await send(restarted(target), "/api/auth/login", {
      body: { email: alice.email, password: STRONG_PASSWORD },
    });
    expect(login.status).toBe(401);

    // Asked first, the operator is warned before anything is erased.
    const asked = await cli(target, ["users:erase", "--email", "alice@example.test"]);
    expect(asked.code).toBe(2);
    expect(asked.stderr.split("\n")[0]).toBe(
      `the account of alice@example.test does not match its seal (it was written into the database file): its address may not be its own; check that ${alice.userId} is the account to erase`,
    );
    expect(count(target, "SELECT count(*) AS n FROM users WHERE id = ?", alice.userId)).toBe(1);
    const result = await cli(target, ["users:erase", "--email", "alice@example.test", "--yes"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toStartWith(`erased alice@example.test (${alice.userId})`);
    expect(result.stderr).toBe(
      "the account of alice@example.test did not match its seal (it was written into the database file); it was erased all the same",
    );
    expect(count(target, "SELECT count(*) AS n FROM users WHERE id = ?", alice.userId)).toBe(0);
    expect(count(target, "SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL")).toBe(0);
    expect(
      (await send(restarted(target), "/api/auth/me", { headers: { "x-api-key": key } })).status,
    ).toBe(401);
    // The reports of the row that failed its seal named it by id: erased with the rest (probe 26d F2).
    const reports = target.db.$client
      .query<{ detail: string }, []>(
        "SELECT detail FROM audit_events WHERE type = 'auth.credential_tampered'",
      )
      .all();
    expect(reports.length).toBeGreaterThan(0);
    const dump = JSON.stringify(
      target.db.$client.query("SELECT actor, ip, detail FROM audit_events").all(),
    );
    expect(dump).not.toContain(alice.userId);
    expect(verifyAuditChain(target.db.$client, new AuditKeys(AUDIT_SECRET_KEY)).ok).toBe(true);
  });

  test("an unknown address exits 1 and erases nothing; --email is required", async () => {
    const target = app();
    await signUp(target, { email: "alice@example.test" });
    const unknown = await cli(target, ["users:erase", "--email", "nobody@example.test", "--yes"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe(
      "palisade users:erase: no account has the email nobody@example.test",
    );
    expect(count(target, "SELECT count(*) AS n FROM users")).toBe(1);
    const missing = await cli(target, ["users:erase", "--yes"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe("palisade users:erase: give one of --email or --id");
  });
});

describe("an account whose id the file holds as a blob (a forged row)", () => {
  test("users:list and users:erase show the id as SQL writes a blob, not its bytes joined by commas", async () => {
    const target = app();
    await signUp(target, { email: "alice@example.test" });
    // As someone editing the file would: the sessions still name the old id.
    target.db.$client.run("PRAGMA foreign_keys = OFF");
    target.db.$client.run("UPDATE users SET id = X'41424344' WHERE email = 'alice@example.test'");
    target.db.$client.run("PRAGMA foreign_keys = ON");

    const list = await cli(target, ["users:list"]);
    expect(list.stdout).toStartWith("x'41424344'  alice@example.test  user  created ");
    const json = await cli(target, ["users:list", "--json"]);
    expect(JSON.parse(json.stdout).id).toBe("x'41424344'");

    const asked = await cli(target, ["users:erase", "--email", "alice@example.test"]);
    expect(asked.code).toBe(2);
    expect(asked.stderr).toContain("check that x'41424344' is the account to erase");
    expect(asked.stderr).toContain("this erases the account of alice@example.test (x'41424344')");

    // The forged row is reported by its id as the commands show it (its audit event held an
    // object of the blob's bytes).
    target.services.audit.flush();
    const reports = target.db.$client
      .query("SELECT detail FROM audit_events WHERE type = 'auth.credential_tampered'")
      .all() as { detail: string }[];
    expect(reports.length).toBeGreaterThan(0);
    for (const { detail } of reports) expect(JSON.parse(detail).id).toBe("x'41424344'");
  });

  test("a text id spelt as a blob is its own row: both forged rows are reported (probe 83d F2)", async () => {
    const target = app();
    await signUp(target, { email: "alice@example.test" });
    await signUp(target, { email: "bob@example.test" });
    const sqlite = target.db.$client;
    sqlite.run("PRAGMA foreign_keys = OFF");
    sqlite.run("UPDATE users SET id = X'41424344' WHERE email = 'alice@example.test'");
    sqlite.run("UPDATE users SET id = 'x''41424344''' WHERE email = 'bob@example.test'");
    sqlite.run("PRAGMA foreign_keys = ON");
    const list = await cli(target, ["users:list"]);
    expect(list.stdout.split("\n")).toHaveLength(2);
    target.services.audit.flush();
    const reports = sqlite
      .query("SELECT detail FROM audit_events WHERE type = 'auth.credential_tampered'")
      .all();
    expect(reports).toHaveLength(2);
  });
});

describe("an account whose address the file holds as something else (a forged row)", () => {
  test("users:erase and users:role show a long address cut, saying its length, and one that is no text as SQL writes it (probe 85d F6)", async () => {
    const target = app();
    const alice = await signUp(target, { email: "alice@example.test" });
    target.db.$client.run("UPDATE users SET email = ? WHERE id = ?", [
      `${"a".repeat(600_000)}@example.test`,
      alice.userId,
    ]);
    const asked = await cli(target, ["users:erase", "--email", "alice@example.test"]);
    expect(asked.code).toBe(2);
    expect(asked.stderr.length).toBeLessThan(2_000);
    expect(asked.stderr).toContain(
      `this erases the account of ${"a".repeat(320)}… (600013 characters) (${alice.userId})`,
    );
    const role = await cli(target, [
      "users:role",
      "--email",
      "alice@example.test",
      "--role",
      "user",
    ]);
    expect(role.stdout.length + role.stderr.length).toBeLessThan(2_000);
    target.db.$client.run("UPDATE users SET email = X'414243' WHERE id = ?", [alice.userId]);
    const blob = await cli(target, ["users:erase", "--email", "alice@example.test"]);
    expect(blob.stderr).toContain(`this erases the account of x'414243' (${alice.userId})`);
  });
});
