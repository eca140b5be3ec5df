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

test("a session that used TOKENS_PER_FAMILY refresh tokens ends at its next refresh: 401, revoked, audited; no used token is ever deleted, so a thief's rotations never hide the victim's (probe 86e F3)", async () => {
  current = buildTestApp({ env: ENV });
  const alice = await signUp(current);
  // The login's token and used ones, as rotations leave them: one short of the limit.
  current.db.$client.run(
    `WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < ${TOKENS_PER_FAMILY - 2})
     INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at, used_at)
     SELECT 'used-' || k, t.user_id, t.family_id, 'hash-' || k, t.created_at, t.expires_at, t.created_at
     FROM n, refresh_tokens t WHERE t.user_id = '${alice.userId}'`,
  );
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
