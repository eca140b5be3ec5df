/**
 * `sessions:end --all --yes`: after an incident or a restored backup, an operator ends every
 * session of every account. Refresh tokens stop refreshing at once, access tokens are refused by
 * the running service within a second (the revocation feed) and by one that never cached them, API
 * keys keep working, and it is audited with the counts. Without `--all` and `--yes` it ends nothing.
 */
import { describe, expect, test } from "bun:test";
import { secondProcess, send, type TestApp } from "../support/app";
import { bearer, createKey, logIn, signUp } from "../support/auth";
import { appClosedAfter, cleanupsAfterEach } from "../support/cleanups";
import { cliInProcess } from "../support/cli";
import { waitFor } from "../support/wait";

const cleanups = cleanupsAfterEach();
const AUDIT_SECRET_KEY = "sessions-end-test-audit-key-0123456789abcd";
const app = (): TestApp => appClosedAfter(cleanups, { env: { AUDIT_SECRET_KEY } });

function cli(target: TestApp, args: string[]) {
  return cliInProcess(args, { DATABASE_PATH: target.databasePath, AUDIT_SECRET_KEY });
}

const me = (target: { app: TestApp["app"] }, token: string) =>
  send(target, "/api/auth/me", { headers: bearer(token) });

const refresh = (target: TestApp, refreshToken: string) =>
  send(target, "/api/auth/refresh", { body: { refreshToken }, peer: "10.7.0.1" });

describe("sessions:end", () => {
  test("without --all, or without --yes, it ends nothing", async () => {
    const target = app();
    const alice = await signUp(target);
    for (const args of [["sessions:end"], ["sessions:end", "--yes"], ["sessions:end", "--all"]]) {
      const result = await cli(target, args);
      expect(result.code).toBe(2);
      expect(result.stdout).toBe("");
    }
    expect((await me(target, alice.accessToken)).status).toBe(200);
    expect((await refresh(target, alice.refreshToken)).status).toBe(200);
  });

  test("every account's sessions end, in this process and in one that never cached them; API keys stay; audited", async () => {
    const target = app();
    const alice = await signUp(target);
    const bob = await signUp(target);
    // Bob signed in twice: two sessions.
    const bobAgain = await logIn(target, bob.email);
    const { key } = createKey(target, ["chat"], alice.userId);
    for (const token of [alice.accessToken, bob.accessToken, bobAgain.accessToken]) {
      expect((await me(target, token)).status).toBe(200);
    }

    const result = await cli(target, ["sessions:end", "--all", "--yes"]);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe("ended 3 sessions of 2 accounts");

    // The running service read its cache before: within a second it refuses them.
    for (const token of [alice.accessToken, bob.accessToken, bobAgain.accessToken]) {
      // Asked a few times a second: asked as fast as it answers, the refusals would pass the
      // account's rate limit and lock it out.
      await waitFor(async () => (await me(target, token)).status === 401, {
        intervalMs: 250,
        what: "the cached token refused",
      });
    }
    const fresh = secondProcess(target);
    cleanups.push(fresh.close);
    expect((await me(fresh, alice.accessToken)).status).toBe(401);
    for (const token of [alice.refreshToken, bob.refreshToken, bobAgain.refreshToken]) {
      expect((await refresh(target, token)).status).toBe(401);
    }
    // A key is not a session.
    const keyed = await send(target, "/api/chat", {
      headers: { "x-api-key": key },
      body: { message: "still here?" },
    });
    expect(keyed.status).toBe(200);
    // Signing in again works.
    const back = await logIn(target, alice.email);
    expect((await me(target, back.accessToken)).status).toBe(200);

    const audited = target.db.$client
      .query("SELECT type, actor, detail FROM audit_events WHERE type LIKE 'admin.sessions.%'")
      .all() as { type: string; actor: string; detail: string }[];
    expect(audited.map(({ type, actor, detail }) => [type, actor, JSON.parse(detail)])).toEqual([
      ["admin.sessions.ending", "cli", {}],
      ["admin.sessions.ended", "cli", { sessions: 3, accounts: 2 }],
    ]);
    // A second run ends only the session signed in since.
    const again = await cli(target, ["sessions:end", "--all", "--yes"]);
    expect(again.stdout.trim()).toBe("ended 1 session of 1 account");
  });

  test("a run cut short after its first batch is on record: the sessions it ended and who began it", async () => {
    const target = app();
    const { userId } = await signUp(target);
    const seal = target.services.credentialSeal;
    const now = Date.now();
    const insert = target.db.$client.prepare(
      "INSERT INTO refresh_families (id, user_id, created_at, expires_at, seal) VALUES (?, ?, ?, ?, ?)",
    );
    // With the one signing up made: 150.
    for (let i = 0; i < 149; i++) {
      const id = `fam-${String(i).padStart(5, "0")}`;
      insert.run(id, userId, now, now + 86_400_000, seal.family({ id, userId, revokedAt: null }));
    }
    expect(() =>
      target.services.auth.endAllSessions("cli", () => {
        throw new Error("killed between two batches");
      }),
    ).toThrow("killed between two batches");
    const live = target.db.$client
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM refresh_families WHERE revoked_at IS NULL",
      )
      .get()!;
    expect(live.n).toBe(50);
    const audited = target.db.$client
      .query("SELECT type, actor FROM audit_events WHERE type LIKE 'admin.sessions.%'")
      .all();
    expect(audited).toEqual([{ type: "admin.sessions.ending", actor: "cli" }]);
  });

  test("thousands of sessions are ended a batch at a time, every one of them", async () => {
    const target = app();
    const alice = await signUp(target);
    const seal = target.services.credentialSeal;
    const now = Date.now();
    const insert = target.db.$client.prepare(
      "INSERT INTO refresh_families (id, user_id, created_at, expires_at, seal) VALUES (?, ?, ?, ?, ?)",
    );
    target.db.$client.transaction(() => {
      for (let i = 0; i < 2500; i++) {
        const id = `fam-${String(i).padStart(5, "0")}`;
        const family = { id, userId: alice.userId, revokedAt: null };
        insert.run(id, alice.userId, now, now + 86_400_000, seal.family(family));
      }
    })();
    const result = await cli(target, ["sessions:end", "--all", "--yes"]);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe("ended 2501 sessions of 1 account");
    const live = target.db.$client
      .query<{ id: string }, []>("SELECT id FROM refresh_families WHERE revoked_at IS NULL")
      .all();
    expect(live).toEqual([]);
    const revocations = target.db.$client
      .query<{ n: number }, []>("SELECT count(*) AS n FROM auth_revocations WHERE kind = 'family'")
      .get()!;
    expect(revocations.n).toBe(2501);
  });
});
