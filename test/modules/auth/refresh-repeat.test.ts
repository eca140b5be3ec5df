/**
 * A refresh token sent again within REPEAT_GRACE_MS of its use — a client retrying a refresh
 * whose answer it lost, two tabs refreshing at once — is a repeat: answered with the successor the
 * first use stored and a new access token, and the session goes on. Anything else that presents a
 * used token (past the grace, two rotations behind, after a logout, a use wiped from the file) is
 * reuse and ends the family. Concurrent sends, on one and two instances: refresh-race.test.ts.
 */
import { afterEach, expect, test } from "bun:test";
import { REPEAT_GRACE_MS } from "../../../src/modules/auth/service";
import { sha256Hex } from "../../../src/plugins/auth/tokens";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, STRONG_PASSWORD, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import { cookieHeader, cookiesOf } from "../../support/cookies";

/** Loopback is never rate limited here: these tests refresh more than the route's limit. */
const ENV = { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" };

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

interface Pair {
  accessToken: string;
  refreshToken: string;
}

async function refresh(target: TestApp, refreshToken: string) {
  const response = await send(target, "/api/auth/refresh", { body: { refreshToken } });
  return { status: response.status, body: (await response.json()) as Pair & { code?: string } };
}

async function me(target: TestApp, accessToken: string): Promise<number> {
  return (await send(target, "/api/auth/me", { headers: bearer(accessToken) })).status;
}

function auditTypes(target: TestApp): { type: string; detail: string | null }[] {
  return target.db.$client
    .query<{ type: string; detail: string | null }, []>(
      "SELECT type, detail FROM audit_events WHERE type LIKE 'auth.refresh.%' ORDER BY id",
    )
    .all();
}

function familyRevoked(target: TestApp, refreshToken: string): boolean {
  const row = target.db.$client
    .query<{ revokedAt: number | null }, [string]>(
      `SELECT f.revoked_at AS revokedAt FROM refresh_families f
         JOIN refresh_tokens t ON t.family_id = f.id WHERE t.token_hash = ?`,
    )
    .get(sha256Hex(refreshToken));
  if (!row) throw new Error("no such token");
  return row.revokedAt !== null;
}

async function started() {
  const clock = new ManualClock();
  current = buildTestApp({ clock, env: ENV });
  const session = await signUp(current);
  return { clock, target: current, session };
}

test("a refresh sent again within the grace gets the same successor and a working access token; the session goes on", async () => {
  const { clock, target, session } = await started();
  const first = await refresh(target, session.refreshToken);
  expect(first.status).toBe(200);

  // The last moment of the grace.
  clock.advance(REPEAT_GRACE_MS);
  const again = await refresh(target, session.refreshToken);
  expect(again.status).toBe(200);
  expect(again.body.refreshToken).toBe(first.body.refreshToken);
  expect(again.body.accessToken).not.toBe(first.body.accessToken);
  expect(await me(target, first.body.accessToken)).toBe(200);
  expect(await me(target, again.body.accessToken)).toBe(200);

  // The successor rotates as any token does, and nothing was ended.
  const next = await refresh(target, again.body.refreshToken);
  expect(next.status).toBe(200);
  expect(next.body.refreshToken).not.toBe(again.body.refreshToken);
  expect(await me(target, next.body.accessToken)).toBe(200);
  expect(familyRevoked(target, session.refreshToken)).toBe(false);

  // Audited as a success, marked a repeat; never as reuse, never counted as a failure.
  const audited = auditTypes(target);
  expect(audited.map((row) => row.type)).toEqual([
    "auth.refresh.succeeded",
    "auth.refresh.succeeded",
    "auth.refresh.succeeded",
  ]);
  expect(JSON.parse(audited[1]!.detail!)).toMatchObject({ repeat: true });
  expect(JSON.parse(audited[0]!.detail ?? "{}")).not.toHaveProperty("repeat");
  expect(await (await send(target, "/metrics")).text()).toContain(
    'auth_failures_total{reason="refresh_reused"} 0\n',
  );
});

test("a millisecond past the grace, the same token is reuse: the family ends, its successor and access tokens with it", async () => {
  const { clock, target, session } = await started();
  const first = await refresh(target, session.refreshToken);
  clock.advance(REPEAT_GRACE_MS + 1);
  const late = await refresh(target, session.refreshToken);
  expect(late.status).toBe(401);
  expect(late.body.code).toBe("UNAUTHENTICATED");
  expect(familyRevoked(target, session.refreshToken)).toBe(true);
  expect((await refresh(target, first.body.refreshToken)).status).toBe(401);
  expect(await me(target, first.body.accessToken)).toBe(401);
  expect(auditTypes(target).map((row) => row.type)).toEqual([
    "auth.refresh.succeeded",
    "auth.refresh.reused",
  ]);
});

test("within the grace, a token two rotations behind is reuse: its successor was used, so someone else holds the session", async () => {
  const { target, session } = await started();
  const one = await refresh(target, session.refreshToken);
  const two = await refresh(target, one.body.refreshToken);
  expect([one.status, two.status]).toEqual([200, 200]);

  expect((await refresh(target, session.refreshToken)).status).toBe(401);
  expect(familyRevoked(target, session.refreshToken)).toBe(true);
  expect((await refresh(target, two.body.refreshToken)).status).toBe(401);
  expect(await me(target, two.body.accessToken)).toBe(401);
  // The token one behind is refused too: the family is over.
  expect((await refresh(target, one.body.refreshToken)).status).toBe(401);
});

test("within the grace, a repeat after the session's logout is refused", async () => {
  const { target, session } = await started();
  const first = await refresh(target, session.refreshToken);
  const out = await send(target, "/api/auth/logout", {
    method: "POST",
    headers: bearer(first.body.accessToken),
  });
  expect(out.status).toBe(204);
  expect((await refresh(target, session.refreshToken)).status).toBe(401);
  expect((await refresh(target, first.body.refreshToken)).status).toBe(401);
});

test("a spent token whose use was wiped from the file (used_at cleared, no secret needed) is reuse, not a second rotation", async () => {
  const { clock, target, session } = await started();
  const first = await refresh(target, session.refreshToken);
  clock.advance(REPEAT_GRACE_MS + 1);
  target.db.$client
    .query("UPDATE refresh_tokens SET used_at = NULL WHERE token_hash = ?")
    .run(sha256Hex(session.refreshToken));

  const replay = await refresh(target, session.refreshToken);
  expect(replay.status).toBe(401);
  expect(familyRevoked(target, session.refreshToken)).toBe(true);
  expect((await refresh(target, first.body.refreshToken)).status).toBe(401);
  expect(auditTypes(target).at(-1)!.type).toBe("auth.refresh.reused");
});

test("two browser tabs refreshing one cookie session at once both stay signed in, with the same new refresh cookie", async () => {
  const { target, session } = await started();
  const login = await send(target, "/api/auth/login?mode=cookie", {
    body: { email: session.email, password: STRONG_PASSWORD },
  });
  const jar = cookiesOf(login);
  const csrf = await send(target, "/api/auth/csrf", { headers: { cookie: cookieHeader(jar) } });
  const { token } = (await csrf.json()) as { token: string };
  const headers = { cookie: cookieHeader({ ...jar, ...cookiesOf(csrf) }), "x-csrf-token": token };

  const tabs = await Promise.all(
    [0, 1].map(() => send(target, "/api/auth/refresh", { method: "POST", headers })),
  );
  expect(tabs.map((response) => response.status)).toEqual([200, 200]);
  const [left, right] = tabs.map(cookiesOf);
  expect(left!.palisade_refresh).toBe(right!.palisade_refresh!);
  expect(left!.palisade_refresh).not.toBe(jar.palisade_refresh!);
  for (const tab of [left!, right!]) {
    const page = await send(target, "/api/auth/me", { headers: { cookie: cookieHeader(tab) } });
    expect(page.status).toBe(200);
  }
  expect(familyRevoked(target, jar.palisade_refresh!)).toBe(false);
});

test("a use time written into the file (far ahead, text, a number no clock reads) never stretches the grace: the token is reuse (probe 29a F1)", async () => {
  for (const usedAt of ["now + 3600000", "'x'", "9e18", "1e308"]) {
    const { clock, target, session } = await started();
    const first = await refresh(target, session.refreshToken);
    clock.advance(REPEAT_GRACE_MS + 1_500);
    target.db.$client
      .query(
        `UPDATE refresh_tokens SET used_at = ${usedAt.replace("now", String(clock.now()))} WHERE token_hash = ?`,
      )
      .run(sha256Hex(session.refreshToken));
    const late = await refresh(target, session.refreshToken);
    expect({ usedAt, status: late.status }).toEqual({ usedAt, status: 401 });
    expect(familyRevoked(target, session.refreshToken)).toBe(true);
    expect((await refresh(target, first.body.refreshToken)).status).toBe(401);
    target.close();
    current = null;
  }
});

test("a repeat whose first use read the clock after it (the two raced) is still a repeat, within the grace either way", async () => {
  const { target, session, clock } = await started();
  const first = await refresh(target, session.refreshToken);
  // As if the winner's clock read 5 s later than this refresh's.
  target.db.$client
    .query("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?")
    .run(clock.now() + 5_000, sha256Hex(session.refreshToken));
  const again = await refresh(target, session.refreshToken);
  expect(again.status).toBe(200);
  expect(again.body.refreshToken).toBe(first.body.refreshToken);
});
