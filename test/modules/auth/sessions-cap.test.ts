/**
 * An account keeps at most SESSIONS_PER_ACCOUNT live sessions: a sign-in past it ends the oldest.
 * Without the cap, signing in at the account's limit for 30 days kept ~216,000 live, which its
 * export read before its first byte and its erasure revoked in one transaction (probe 83b F4).
 */
import { afterEach, expect, test } from "bun:test";
import { SESSIONS_PER_ACCOUNT } from "../../../src/modules/auth/service";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, logIn, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/**
 * Alice signed in SESSIONS_PER_ACCOUNT times (her sessions in the order made), limits raised so
 * nothing is refused, on `clock`.
 */
async function atTheCap(clock?: ManualClock) {
  current = buildTestApp({
    clock,
    env: {
      RATE_LIMIT_LOGIN: "100000",
      RATE_LIMIT_BURST: "100000",
      RATE_LIMIT_PER_MINUTE: "100000",
    },
  });
  const target = current;
  const alice = await signUp(target);
  const sessions = [alice];
  for (let i = 1; i < SESSIONS_PER_ACCOUNT; i++) {
    sessions.push({ ...alice, ...(await logIn(target, alice.email, `10.4.${i % 250}.1`)) });
  }
  return { target, alice, sessions };
}

test(`past ${SESSIONS_PER_ACCOUNT} live sessions a sign-in ends the oldest, said in its audit row`, async () => {
  const { target, alice, sessions } = await atTheCap();
  const live = () =>
    (
      target.db.$client
        .query(
          "SELECT count(*) AS n FROM refresh_families WHERE user_id = ? AND revoked_at IS NULL",
        )
        .get(alice.userId) as { n: number }
    ).n;
  expect(live()).toBe(SESSIONS_PER_ACCOUNT);
  // The oldest still works until the next sign-in.
  expect(
    (await send(target, "/api/auth/me", { headers: bearer(sessions[0]!.accessToken) })).status,
  ).toBe(200);
  const newest = await logIn(target, alice.email, "10.4.251.1");
  expect(live()).toBe(SESSIONS_PER_ACCOUNT);
  // The oldest is ended: its refresh token and its access token refused; the one after it stands.
  const refreshed = await send(target, "/api/auth/refresh", {
    body: { refreshToken: sessions[0]!.refreshToken },
    peer: "10.4.252.1",
  });
  expect(refreshed.status).toBe(401);
  expect(
    (await send(target, "/api/auth/me", { headers: bearer(sessions[0]!.accessToken) })).status,
  ).toBe(401);
  expect(
    (await send(target, "/api/auth/me", { headers: bearer(sessions[1]!.accessToken) })).status,
  ).toBe(200);
  expect((await send(target, "/api/auth/me", { headers: bearer(newest.accessToken) })).status).toBe(
    200,
  );
  target.services.audit.flush();
  const details = target.db.$client
    .query("SELECT detail FROM audit_events WHERE type = 'auth.login.succeeded' ORDER BY id")
    .all()
    .map((row) => (row as { detail: string | null }).detail);
  expect(details.filter((detail) => detail !== "{}")).toEqual(['{"sessionsEnded":1}']);
}, 60_000);

test("a sign-in at the cap after the clock stepped back keeps its own session (probe 83g F5); the ended ones leave the file with their tokens (83g F1)", async () => {
  const clock = new ManualClock();
  const { target, alice } = await atTheCap(clock);
  clock.advance(-5 * 60_000);
  const after = await logIn(target, alice.email, "10.5.251.1");
  expect((await send(target, "/api/auth/me", { headers: bearer(after.accessToken) })).status).toBe(
    200,
  );
  const refreshed = await send(target, "/api/auth/refresh", {
    body: { refreshToken: after.refreshToken },
    peer: "10.5.252.1",
  });
  expect(refreshed.status).toBe(200);
  const rows = () =>
    (
      target.db.$client
        .query("SELECT count(*) AS n FROM refresh_families WHERE user_id = ?")
        .get(alice.userId) as { n: number }
    ).n;
  expect(rows()).toBe(SESSIONS_PER_ACCOUNT + 1);
  // Once no token of the ended one can be used (an access token's life, and a minute), it goes.
  const accessTtlMs = target.config.jwt.accessTokenExpireMinutes * 60_000;
  clock.advance(accessTtlMs);
  target.services.runMaintenance();
  expect(rows()).toBe(SESSIONS_PER_ACCOUNT + 1);
  clock.advance(5 * 60_000 + 61_000);
  target.services.runMaintenance();
  expect(rows()).toBe(SESSIONS_PER_ACCOUNT);
}, 60_000);

test("at the cap after a clock step back, each sign-in ends the session written longest ago, not the one made a moment before (probe 83h F3)", async () => {
  const clock = new ManualClock();
  const { target, alice } = await atTheCap(clock);
  clock.advance(-60 * 60_000);
  const phone = await logIn(target, alice.email, "10.6.251.1");
  clock.advance(1_000);
  const laptop = await logIn(target, alice.email, "10.6.252.1");
  for (const session of [phone, laptop]) {
    expect(
      (await send(target, "/api/auth/me", { headers: bearer(session.accessToken) })).status,
    ).toBe(200);
  }
  // The first two written are the ones ended.
  expect((await send(target, "/api/auth/me", { headers: bearer(alice.accessToken) })).status).toBe(
    401,
  );
}, 60_000);
