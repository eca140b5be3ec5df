/**
 * Refresh tokens begin `pal_rt_`, a shape the log and error-report scrubbers and the request-id
 * check know: a client that sends its token where it does not belong (a request id, a user agent,
 * a path) does not copy a 30-day credential into the logs, the audit log or Sentry (probe 30b F2).
 * Tokens the release before the prefix issued or rotated keep working across the upgrade.
 */
import { afterEach, expect, test } from "bun:test";
import {
  refreshSuccessors,
  unprefixedSuccessor,
} from "../../../src/modules/auth/refresh-successor";
import { REPEAT_GRACE_MS } from "../../../src/modules/auth/service";
import { REFRESH_TOKEN_PREFIX, sha256Hex } from "../../../src/plugins/auth/tokens";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";

const ENV = { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" };
const SHAPE = /^pal_rt_[A-Za-z0-9_-]{43}$/;

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

async function refresh(target: TestApp, refreshToken: string) {
  const response = await send(target, "/api/auth/refresh", { body: { refreshToken } });
  const body = (await response.json()) as { accessToken: string; refreshToken: string };
  return { status: response.status, body };
}

/**
 * Rewrites a stored token as the release before the prefix stored it: the hash of its spelling
 * without `pal_rt_`, sealed again as that release sealed it (the seal covers the hash).
 */
function storeUnprefixed(target: TestApp, token: string): string {
  const unprefixed = unprefixedSuccessor(token);
  const sqlite = target.db.$client;
  const row = sqlite
    .query<{ id: string; userId: string; familyId: string; expiresAt: number }, [string]>(
      `SELECT id, user_id AS userId, family_id AS familyId, expires_at AS expiresAt
         FROM refresh_tokens WHERE token_hash = ?`,
    )
    .get(sha256Hex(token));
  if (!row) throw new Error("no such token");
  const tokenHash = sha256Hex(unprefixed);
  const seal = target.services.credentialSeal.refreshToken({ ...row, tokenHash });
  sqlite.run("UPDATE refresh_tokens SET token_hash = ?, seal = ? WHERE id = ?", [
    tokenHash,
    seal,
    row.id,
  ]);
  return unprefixed;
}

test("every refresh token issued, at sign-in and at each rotation, begins pal_rt_", async () => {
  current = buildTestApp({ env: ENV });
  const session = await signUp(current);
  expect(session.refreshToken).toMatch(SHAPE);
  const rotated = await refresh(current, session.refreshToken);
  expect(rotated.status).toBe(200);
  expect(rotated.body.refreshToken).toMatch(SHAPE);
  // A repeat within the grace gets the same successor, prefixed as it was stored.
  const repeated = await refresh(current, session.refreshToken);
  expect(repeated.body.refreshToken).toBe(rotated.body.refreshToken);
});

test("a refresh token sent as a request id, a user agent or in a path is not echoed, logged, audited or kept", async () => {
  current = buildTestApp({ env: ENV });
  const session = await signUp(current);
  const token = session.refreshToken;
  const misplaced = await send(current, "/api/auth/login", {
    body: "x",
    headers: {
      "content-type": "text/plain",
      "x-request-id": token,
      "user-agent": `MyApp/1.0 (refresh ${token})`,
    },
  });
  expect(misplaced.status).toBe(415);
  // Refused as a request id: replaced, never echoed.
  expect(misplaced.headers.get("x-request-id")).not.toBe(token);
  expect(await misplaced.text()).not.toContain(token);
  const unrouted = await send(current, `/nope/${token}`, { headers: bearer(session.accessToken) });
  expect(unrouted.status).toBe(404);
  // Glued to other text, as a careless client might write it.
  await send(current, `/nope/x${token}`);

  const random = token.slice(REFRESH_TOKEN_PREFIX.length);
  expect(current.logs.text).not.toContain(random);
  const audit = current.db.$client
    .query<{ text: string }, []>(
      "SELECT group_concat(request_id || ' ' || coalesce(detail, '')) AS text FROM audit_events",
    )
    .get();
  expect(audit?.text ?? "").not.toContain(random);
  expect(current.logs.text).toContain("[REDACTED]");
  // The token itself was left alone.
  expect((await refresh(current, token)).status).toBe(200);
});

test("a token the release before the prefix issued still refreshes, to a prefixed successor", async () => {
  current = buildTestApp({ env: ENV });
  const session = await signUp(current);
  const legacy = storeUnprefixed(current, session.refreshToken);
  expect(legacy).not.toStartWith(REFRESH_TOKEN_PREFIX);
  expect((await refresh(current, session.refreshToken)).status).toBe(401);
  const rotated = await refresh(current, legacy);
  expect(rotated.status).toBe(200);
  expect(rotated.body.refreshToken).toMatch(SHAPE);
  expect((await refresh(current, rotated.body.refreshToken)).status).toBe(200);
});

test("a token the release before rotated is a repeat within the grace across the upgrade, answered with the successor as stored", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ clock, env: ENV });
  const session = await signUp(current);
  const first = await refresh(current, session.refreshToken);
  expect(first.status).toBe(200);
  // As the release before stored that rotation's successor: the same HMAC, unprefixed.
  const successorOf = refreshSuccessors(current.config.audit.secretKey);
  expect(first.body.refreshToken).toBe(successorOf(session.refreshToken));
  const storedBefore = storeUnprefixed(current, first.body.refreshToken);

  clock.advance(REPEAT_GRACE_MS - 1);
  const again = await refresh(current, session.refreshToken);
  expect(again.status).toBe(200);
  expect(again.body.refreshToken).toBe(storedBefore);
  // The session goes on with the token the client was given.
  const next = await refresh(current, again.body.refreshToken);
  expect(next.status).toBe(200);
  expect(next.body.refreshToken).toMatch(SHAPE);
  const audited = current.db.$client
    .query<{ type: string }, []>("SELECT type FROM audit_events WHERE type LIKE 'auth.refresh.%'")
    .all()
    .map((row) => row.type);
  expect(audited).not.toContain("auth.refresh.reused");
});

test("a spent token of the release before, its use wiped from the file, is still reuse", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ clock, env: ENV });
  const session = await signUp(current);
  const first = await refresh(current, session.refreshToken);
  storeUnprefixed(current, first.body.refreshToken);
  clock.advance(REPEAT_GRACE_MS + 1);
  current.db.$client
    .query("UPDATE refresh_tokens SET used_at = NULL WHERE token_hash = ?")
    .run(sha256Hex(session.refreshToken));
  expect((await refresh(current, session.refreshToken)).status).toBe(401);
  expect((await refresh(current, unprefixedSuccessor(first.body.refreshToken))).status).toBe(401);
});
