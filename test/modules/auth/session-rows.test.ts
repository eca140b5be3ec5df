/**
 * How many refresh-token rows one session keeps (probe 86c F2): each refresh stored one and none
 * went before its 30 days, so one account refreshing from many /64s grew a session without bound,
 * and its logout or erasure rewrote every row in one transaction.
 */
import { afterEach, expect, test } from "bun:test";
import { sessionsContributor, USED_TOKENS_AHEAD_PART } from "../../../src/modules/auth/privacy";
import { REPEAT_GRACE_MS, TOKENS_PER_FAMILY } from "../../../src/modules/auth/service";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import { planOf, statementsPrepared } from "../../support/query-plans";

/** Loopback is never rate limited here: these tests refresh far more than the route's limit. */
const ENV = { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" };

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

async function refreshed(target: TestApp, refreshToken: string) {
  const response = await send(target, "/api/auth/refresh", { body: { refreshToken } });
  return {
    status: response.status,
    body: (await response.json()) as { accessToken: string; refreshToken: string },
  };
}

/**
 * Adds `count` used refresh tokens to the session of `userId`'s one token, as rotations leave them
 * (written into the file: tens of thousands of refreshes would take the suite minutes).
 */
function addUsedTokens(target: TestApp, userId: string, count: number): void {
  target.db.$client.run(
    `WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < ${count})
     INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at, used_at)
     SELECT 'used-' || k, t.user_id, t.family_id, 'hash-' || k, t.created_at, t.expires_at, t.created_at
     FROM n, refresh_tokens t WHERE t.user_id = ?`,
    [userId],
  );
}

const tokenRows = (target: TestApp, userId: string) =>
  (
    target.db.$client
      .query<{ n: number }, [string]>("SELECT count(*) AS n FROM refresh_tokens WHERE user_id = ?")
      .get(userId) as { n: number }
  ).n;

test("a session that used TOKENS_PER_FAMILY refresh tokens ends at its next refresh: 401, revoked, audited; no used token is ever deleted, so a thief's rotations never hide the victim's (probe 86e F3)", async () => {
  current = buildTestApp({ env: ENV });
  const alice = await signUp(current);
  // The login's token and used ones, as rotations leave them: one short of the limit.
  addUsedTokens(current, alice.userId, TOKENS_PER_FAMILY - 2);
  const first = await refreshed(current, alice.refreshToken);
  expect(first.status).toBe(200);
  expect(tokenRows(current, alice.userId)).toBe(TOKENS_PER_FAMILY);
  const full = await refreshed(current, first.body.refreshToken);
  expect(full.status).toBe(401);
  expect(tokenRows(current, alice.userId)).toBe(TOKENS_PER_FAMILY);
  const family = current.db.$client
    .query<{ revoked: number }, [string]>(
      "SELECT count(*) AS revoked FROM refresh_families WHERE user_id = ? AND revoked_at IS NOT NULL",
    )
    .get(alice.userId);
  expect(family).toEqual({ revoked: 1 });
  current.services.audit.flush();
  const ended = current.db.$client
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'auth.logout' AND outcome = 'info'",
    )
    .all();
  expect(ended.map((row) => JSON.parse(row.detail).reason)).toEqual(["token_limit"]);
  // The first token, used long ago, is still known: presenting it is reuse, never "unknown".
  expect(
    current.db.$client
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM refresh_tokens WHERE used_at IS NOT NULL",
      )
      .get(),
  ).toEqual({ n: TOKENS_PER_FAMILY - 1 });
});

test("an erasure deletes the used tokens in parts while the account stands: its sessions go on working between them", async () => {
  current = buildTestApp({ env: ENV });
  const alice = await signUp(current);
  addUsedTokens(current, alice.userId, USED_TOKENS_AHEAD_PART * 1.5);
  const sessions = sessionsContributor(current.db, current.services.auth, {
    intact: { family: () => true } as never,
  });
  const step = sessions.eraseAhead!(alice.userId, {
    actors: [],
    pseudonym: "p",
    requestId: null,
    requestedBy: `user:${alice.userId}`,
  });
  expect(step()).toBe(false);
  expect(tokenRows(current, alice.userId)).toBe(USED_TOKENS_AHEAD_PART / 2 + 1);
  expect(step()).toBe(true);
  // The login's token, unused, is all that is left, and the session still works.
  expect(tokenRows(current, alice.userId)).toBe(1);
  expect((await send(current, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    200,
  );
  expect((await refreshed(current, alice.refreshToken)).status).toBe(200);
  // And the erasure itself finishes what is left.
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
  });
  expect(erased.status).toBeLessThan(300);
  expect(tokenRows(current, alice.userId)).toBe(0);
});

test("ending a session leaves its used tokens as they are (refused by the family's revocation), and the prune deletes them, then the family, once an access token's life has passed (probe 87a F1)", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ env: ENV, clock });
  const alice = await signUp(current);
  const sqlite = current.db.$client;
  addUsedTokens(current, alice.userId, 2500);
  const out = await send(current, "/api/auth/logout", {
    method: "POST",
    headers: bearer(alice.accessToken),
  });
  expect(out.status).toBe(204);
  expect((await refreshed(current, alice.refreshToken)).status).toBe(401);
  expect((await send(current, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    401,
  );
  // Only the token not used yet was written: rewriting 10,000 used ones held the lock 0.7 s.
  const revoked = () =>
    sqlite
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM refresh_tokens WHERE revoked_at IS NOT NULL",
      )
      .get()!.n;
  expect(revoked()).toBe(1);
  const families = () =>
    sqlite
      .query<{ n: number }, [string]>(
        "SELECT count(*) AS n FROM refresh_families WHERE user_id = ?",
      )
      .get(alice.userId)!.n;
  // Within an access token's life, nothing goes.
  current.services.runMaintenance();
  expect(tokenRows(current, alice.userId)).toBe(2501);
  clock.advance(current.config.jwt.accessTokenExpireMinutes * 60_000 + 2 * 60_000);
  current.services.runMaintenance();
  // A thousand a run; the family stays while any of its tokens does.
  expect(tokenRows(current, alice.userId)).toBe(1501);
  expect(families()).toBe(1);
  current.services.runMaintenance();
  current.services.runMaintenance();
  expect(tokenRows(current, alice.userId)).toBe(0);
  current.services.runMaintenance();
  expect(families()).toBe(0);
  expect((await refreshed(current, alice.refreshToken)).status).toBe(401);
});

test("ending a session finds its unused tokens by their own index (migration 0034), not by reading its used ones", async () => {
  current = buildTestApp({ env: ENV });
  const alice = await signUp(current);
  const sqlite = current.db.$client;
  let status = 0;
  const statements = await statementsPrepared(sqlite, async () => {
    const out = await send(current!, "/api/auth/logout", {
      method: "POST",
      headers: bearer(alice.accessToken),
    });
    status = out.status;
  });
  expect(status).toBe(204);
  const revoking = statements.find((text) =>
    /^update "refresh_tokens" set "revoked_at"/i.test(text),
  );
  expect(revoking).toBeDefined();
  expect(planOf(sqlite, revoking!)[0]).toStartWith(
    "SEARCH refresh_tokens USING INDEX refresh_tokens_unused (family_id=?)",
  );
});

test("the prune finds what it deletes through indexes (migration 0035), never by reading all of refresh_tokens or refresh_families", async () => {
  // A scan held the write lock ~0.15 s every 10 s among 720,000 tokens (probe 87c), long past the
  // 50 ms a request waits for it before its 503.
  const clock = new ManualClock();
  current = buildTestApp({ env: ENV, clock });
  const alice = await signUp(current);
  addUsedTokens(current, alice.userId, 50);
  await send(current, "/api/auth/logout", { method: "POST", headers: bearer(alice.accessToken) });
  clock.advance(current.config.jwt.accessTokenExpireMinutes * 60_000 + 2 * 60_000);
  const sqlite = current.db.$client;
  const statements = await statementsPrepared(sqlite, () => current!.services.runMaintenance());
  const pruning = statements.filter((text) =>
    /^delete from "refresh_(tokens|families)"/i.test(text),
  );
  expect(pruning.length).toBeGreaterThanOrEqual(3);
  for (const text of pruning) {
    expect(planOf(sqlite, text).filter((step) => /^SCAN refresh_/.test(step))).toEqual([]);
  }
  // And it still deletes: the ended session's tokens are gone, the family after them.
  expect(tokenRows(current, alice.userId)).toBe(0);
});

test("a token or a session whose expiry is past any lifetime Palisade allows, or no number (written into the file: refused, never expiring), is pruned; a genuine one is not (probes 88e F3, 88f F3, F4)", async () => {
  current = buildTestApp({ env: ENV });
  const bob = await signUp(current);
  const carol = await signUp(current);
  const sqlite = current.db.$client;
  for (const [id, expiry] of [
    ["never-expiring", "never"],
    ["impossible", 9_000_000_000_000_000],
  ] as const) {
    sqlite.run(
      `INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at)
       SELECT ?, user_id, family_id, 'hash-' || ?, created_at, ?
       FROM refresh_tokens WHERE user_id = ? LIMIT 1`,
      [id, id, expiry, bob.userId],
    );
  }
  expect(tokenRows(current, bob.userId)).toBe(3);
  // Carol's session row says it never ends, and none of its tokens is left.
  sqlite.run("DELETE FROM refresh_tokens WHERE user_id = ?", [carol.userId]);
  sqlite.run("UPDATE refresh_families SET expires_at = '9999-forever' WHERE user_id = ?", [
    carol.userId,
  ]);
  const families = (userId: string) =>
    sqlite
      .query<{ n: number }, [string]>(
        "SELECT count(*) AS n FROM refresh_families WHERE user_id = ?",
      )
      .get(userId)!.n;
  // And revocation records stamped with no time, or far ahead (probe 88g F5).
  sqlite.run(
    `INSERT INTO auth_revocations (kind, subject, created_at)
     VALUES ('family', 'forged-1', 'someday'), ('family', 'forged-2', 9e15)`,
  );
  const revocations = () =>
    sqlite
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM auth_revocations WHERE subject LIKE 'forged-%'",
      )
      .get()!.n;
  expect(revocations()).toBe(2);
  current.services.runMaintenance();
  expect(tokenRows(current, bob.userId)).toBe(1);
  expect(families(bob.userId)).toBe(1);
  expect(families(carol.userId)).toBe(0);
  expect(revocations()).toBe(0);
  // Bob's genuine token still refreshes.
  expect((await refreshed(current, bob.refreshToken)).status).toBe(200);
});

test("at the longest refresh lifetime, a session made while the clock was ahead outlives the prune once the clock is set back (probe 88g F1)", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ env: { ...ENV, REFRESH_TOKEN_EXPIRE_DAYS: "365" }, clock });
  const day = 24 * 60 * 60_000;
  clock.advance(20 * day);
  const dave = await signUp(current);
  clock.advance(-20 * day);
  current.services.runMaintenance();
  expect(tokenRows(current, dave.userId)).toBe(1);
});

test("a thief's rotations that end the session at the token limit do not hide the victim's token: presented afterwards, it is reuse, audited and counted (probe 87a F6)", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ env: ENV, clock });
  const victim = await signUp(current);
  addUsedTokens(current, victim.userId, TOKENS_PER_FAMILY - 5);
  // The thief rotates with the stolen token until the session is full.
  let token = victim.refreshToken;
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) {
    clock.advance(1000);
    const next = await refreshed(current, token);
    statuses.push(next.status);
    if (next.status !== 200) break;
    token = next.body.refreshToken;
  }
  expect(statuses).toEqual([200, 200, 200, 200, 401]);
  clock.advance(REPEAT_GRACE_MS + 1000);
  // The victim's token, used by the thief first; presented again and again, audited once (probe
  // 87c F4: each presentation wrote a row), counted each time.
  for (let i = 0; i < 3; i++) {
    expect((await refreshed(current, victim.refreshToken)).status).toBe(401);
  }
  current.services.audit.flush();
  const reused = current.db.$client
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'auth.refresh.reused'",
    )
    .all()
    .map((row) => JSON.parse(row.detail));
  expect(reused).toEqual([{ family: expect.any(String), sessionEnded: true }]);
  const metrics = await (await send(current, "/metrics")).text();
  expect(metrics).toMatch(/auth_failures_total\{[^}]*reason="refresh_reused"[^}]*\} 3/);
  // The session's current token, never used, is refused as any token of an ended session.
  expect((await refreshed(current, token)).status).toBe(401);
  current.services.audit.flush();
  expect(
    current.db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE type = 'auth.refresh.reused'")
      .get(),
  ).toEqual({ n: 1 });
});
