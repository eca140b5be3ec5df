/**
 * How many refresh-token rows one session keeps (probe 86c F2): each refresh stored one and none
 * went before its 30 days, so one account refreshing from many /64s grew a session without bound,
 * and its logout or erasure rewrote every row in one transaction.
 */
import { afterEach, expect, test } from "bun:test";
import { sessionsContributor, USED_TOKENS_AHEAD_PART } from "../../../src/modules/auth/privacy";
import { TOKENS_PER_FAMILY } from "../../../src/modules/auth/service";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, signUp } from "../../support/auth";

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

const tokenRows = (target: TestApp, userId: string) =>
  (
    target.db.$client
      .query<{ n: number }, [string]>("SELECT count(*) AS n FROM refresh_tokens WHERE user_id = ?")
      .get(userId) as { n: number }
  ).n;

test("a session keeps at most TOKENS_PER_FAMILY refresh-token rows however often it refreshes, and a recent token's reuse still ends it", async () => {
  current = buildTestApp({ env: ENV });
  const alice = await signUp(current);
  let token = alice.refreshToken;
  const used: string[] = [];
  for (let i = 0; i < TOKENS_PER_FAMILY + 5; i++) {
    const next = await refreshed(current, token);
    expect(next.status).toBe(200);
    used.push(token);
    token = next.body.refreshToken;
  }
  const rows = tokenRows(current, alice.userId);
  expect(rows).toBeLessThanOrEqual(TOKENS_PER_FAMILY);
  expect(rows).toBeGreaterThan(TOKENS_PER_FAMILY - 10);
  // The oldest used token went: unknown, 401, and the session is left alone.
  expect((await refreshed(current, used[0]!)).status).toBe(401);
  const latest = await refreshed(current, token);
  expect(latest.status).toBe(200);
  token = latest.body.refreshToken;
  // One used twenty rotations ago is still known: its reuse ends the session.
  expect((await refreshed(current, used.at(-20)!)).status).toBe(401);
  expect((await refreshed(current, token)).status).toBe(401);
});

test("a session the file swelled shrinks a few rows at each refresh, its oldest used tokens first", async () => {
  current = buildTestApp({ env: ENV });
  const alice = await signUp(current);
  // 1,500 used tokens written into the family as rows before the login's.
  current.db.$client.run(
    `WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 1500)
     INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at, used_at)
     SELECT 'forged-' || k, t.user_id, t.family_id, 'hash-' || k, t.created_at, t.expires_at, t.created_at
     FROM n, refresh_tokens t WHERE t.user_id = '${alice.userId}'`,
  );
  expect(tokenRows(current, alice.userId)).toBe(1501);
  const next = await refreshed(current, alice.refreshToken);
  expect(next.status).toBe(200);
  // One row added, four of the oldest used gone: the login's (the first row, used now) and three.
  expect(tokenRows(current, alice.userId)).toBe(1498);
  const oldest = current.db.$client
    .query<{ id: string }, []>("SELECT id FROM refresh_tokens ORDER BY rowid LIMIT 1")
    .get();
  expect(oldest).toEqual({ id: "forged-4" });
});

test("an erasure deletes the used tokens in parts while the account stands: its sessions go on working between them", async () => {
  current = buildTestApp({ env: ENV });
  const alice = await signUp(current);
  current.db.$client.run(
    `WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < ${USED_TOKENS_AHEAD_PART + 500})
     INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at, used_at)
     SELECT 'used-' || k, t.user_id, t.family_id, 'hash-' || k, t.created_at, t.expires_at, t.created_at
     FROM n, refresh_tokens t WHERE t.user_id = '${alice.userId}'`,
  );
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
  expect(tokenRows(current, alice.userId)).toBe(501);
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
