/**
 * Refresh rotation under concurrency: a table of races, each run in many rounds, on one instance
 * and on two instances (separate connections and caches) sharing one database file. A race never
 * forks the family (at most one unused token is left in it, and each answer's refresh token is
 * the one successor of what it presented). Each race ends with a reuse or a logout, after which
 * EVERY token minted in the family — the original pair and whatever the race handed out — must be
 * refused: at once, after the revocation feed's second, after the in-memory revocation window has
 * passed, and by an instance started afterwards.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { decodeJwt } from "jose";
import { REPEAT_GRACE_MS } from "../../../src/modules/auth/service";
import { buildTestApp, type TestApp } from "../../support/app";
import { bearer, type Session, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import { anotherInstance, type Instance } from "../../support/instance";

/** Loopback is never rate limited here: the races are about tokens, not the limiter. */
const ENV = { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" };
const ACCESS_TTL_MS = 60 * 60_000;
const REVOCATION_FEED_MS = 1_000;

type Target = { app: { handle(request: Request): Promise<Response> } };

interface World {
  main: TestApp;
  clock: ManualClock;
  /** The instances requests are spread over: the main app alone, or it and another. */
  targets: Target[];
  session: Session;
  family: string;
  round: number;
}

interface Minted {
  access: string[];
  refresh: string[];
}

interface RaceResult {
  statuses: number[];
  minted: Minted;
}

/** The family's tokens neither used nor revoked: more than one is a fork of the session. */
function unusedTokens(world: World): number {
  return world.main.db.$client
    .query<{ n: number }, [string]>(
      "SELECT count(*) AS n FROM refresh_tokens WHERE family_id = ? AND used_at IS NULL AND revoked_at IS NULL",
    )
    .get(world.family)!.n;
}

/** Presents a used token again once the grace for repeats has passed: reuse, the family ends. */
async function reuseAfterGrace(world: World, token: string, minted: Minted) {
  world.clock.advance(REPEAT_GRACE_MS + 1);
  return (await refreshOn(world.targets[0]!, token, minted)).status;
}

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const step of cleanup.splice(0).reverse()) step();
});

async function post(target: Target, path: string, init: RequestInit): Promise<Response> {
  return target.app.handle(new Request(`http://localhost${path}`, { method: "POST", ...init }));
}

async function refreshOn(target: Target, refreshToken: string, minted: Minted) {
  const response = await post(target, "/api/auth/refresh", {
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refreshToken }),
  });
  const body = (await response.json()) as {
    accessToken?: string;
    refreshToken?: string;
    code?: string;
  };
  if (response.status === 200) {
    minted.access.push(body.accessToken!);
    minted.refresh.push(body.refreshToken!);
  } else {
    expect(response.status).toBe(401);
    expect(body.code).toBe("UNAUTHENTICATED");
  }
  return { status: response.status, body };
}

async function logoutOn(target: Target, accessToken: string) {
  const response = await post(target, "/api/auth/logout", { headers: bearer(accessToken) });
  await response.arrayBuffer();
  return response.status;
}

async function meOn(target: Target, accessToken: string): Promise<number> {
  const response = await target.app.handle(
    new Request("http://localhost/api/auth/me", { headers: bearer(accessToken) }),
  );
  await response.arrayBuffer();
  return response.status;
}

interface Scenario {
  name: string;
  rounds: number;
  /** Runs the race; returns every response status and every token minted in the family. */
  race(world: World): Promise<RaceResult>;
  /** What the statuses must show (exactly one winner, a 204 logout, …). */
  check(result: RaceResult): void;
}

const REPLAYS = 16;

const scenarios: Scenario[] = [
  {
    name: `${REPLAYS} concurrent sends of one refresh token (one rotation, its successor repeated), then the token past the grace`,
    rounds: 6,
    async race(world) {
      const { targets, session } = world;
      const minted: Minted = { access: [], refresh: [] };
      const results = await Promise.all(
        Array.from({ length: REPLAYS }, (_, i) =>
          refreshOn(targets[i % targets.length]!, session.refreshToken, minted),
        ),
      );
      expect(unusedTokens(world)).toBe(1);
      // Every answer's access token works until the family ends.
      for (const [i, access] of minted.access.entries())
        expect(await meOn(targets[i % targets.length]!, access)).toBe(200);
      const late = await reuseAfterGrace(world, session.refreshToken, minted);
      return { statuses: [...results.map((r) => r.status), late], minted };
    },
    check({ statuses, minted }) {
      expect(statuses.slice(0, REPLAYS)).toEqual(Array(REPLAYS).fill(200));
      expect(new Set(minted.refresh).size).toBe(1);
      expect(statuses[REPLAYS]).toBe(401);
    },
  },
  {
    name: "logout racing refreshes of the same session",
    rounds: 6,
    async race({ targets, session, round }) {
      const minted: Minted = { access: [], refresh: [] };
      // The access token is in every instance's cache before the race.
      for (const target of targets) expect(await meOn(target, session.accessToken)).toBe(200);
      // The logout goes first, between or after the refreshes, by round.
      const refreshes = targets.map(
        (target) => async () => (await refreshOn(target, session.refreshToken, minted)).status,
      );
      const logout = async () =>
        -(await logoutOn(targets[round % targets.length]!, session.accessToken));
      const at = round % (refreshes.length + 1);
      const ops = [...refreshes.slice(0, at), logout, ...refreshes.slice(at)];
      const statuses = await Promise.all(ops.map((op) => op()));
      return { statuses, minted };
    },
    check({ statuses, minted }) {
      // The logout's status is negated to tell it apart.
      expect(statuses.filter((s) => s < 0)).toEqual([-204]);
      // Refreshes before the logout are one rotation: each got the same successor.
      expect(new Set(minted.refresh).size).toBeLessThanOrEqual(1);
    },
  },
  {
    name: "refresh of a used parent racing refreshes of its child",
    rounds: 6,
    async race(world) {
      const { targets, session } = world;
      const minted: Minted = { access: [], refresh: [] };
      const first = await refreshOn(targets[0]!, session.refreshToken, minted);
      expect(first.status).toBe(200);
      const child = first.body.refreshToken!;
      const results = await Promise.all([
        ...targets.map((target) => refreshOn(target, child, minted)),
        ...targets.map((target) => refreshOn(target, session.refreshToken, minted)),
        ...targets.map((target) => refreshOn(target, child, minted)),
      ]);
      // The parent is a repeat while the child is unused, reuse once it is not: whichever way
      // the race went, the family is ended or has one unused token.
      expect(unusedTokens(world)).toBeLessThanOrEqual(1);
      const late = await reuseAfterGrace(world, session.refreshToken, minted);
      return { statuses: [...results.map((r) => r.status), late], minted };
    },
    check({ statuses, minted }) {
      // The child, repeated to the parent's senders, and the child's one successor at most.
      expect(new Set(minted.refresh).size).toBeLessThanOrEqual(2);
      expect(statuses.at(-1)).toBe(401);
    },
  },
  {
    name: "reuse after two rotations, racing the current token's refresh",
    rounds: 4,
    async race({ targets, session }) {
      const minted: Minted = { access: [], refresh: [] };
      const one = await refreshOn(targets[0]!, session.refreshToken, minted);
      const two = await refreshOn(targets.at(-1)!, one.body.refreshToken!, minted);
      expect([one.status, two.status]).toEqual([200, 200]);
      const results = await Promise.all([
        refreshOn(targets[0]!, two.body.refreshToken!, minted),
        refreshOn(targets.at(-1)!, session.refreshToken, minted),
      ]);
      // Sequentially, the replay of the first token is detected as reuse.
      const replay = await refreshOn(targets[0]!, one.body.refreshToken!, minted);
      return { statuses: [...results.map((r) => r.status), replay.status], minted };
    },
    check({ statuses }) {
      expect(statuses[1]).toBe(401);
      expect(statuses[2]).toBe(401);
    },
  },
];

/** Every token of the family is refused, on every instance, now and for the rest of its life. */
async function expectFamilyDead(world: World, minted: Minted) {
  const access = [world.session.accessToken, ...minted.access];
  const refresh = [world.session.refreshToken, ...minted.refresh];
  const refused = async (targets: Target[]) => {
    for (const target of targets) {
      for (const token of access) expect(await meOn(target, token)).toBe(401);
      const scratch: Minted = { access: [], refresh: [] };
      for (const token of refresh)
        expect((await refreshOn(target, token, scratch)).status).toBe(401);
      expect(scratch.refresh).toEqual([]);
    }
  };

  // Within the revocation feed's delay, every instance knows.
  world.clock.advance(REVOCATION_FEED_MS);
  await refused(world.targets);

  // In the database: the family is revoked and no token of it was left unused and unrevoked (a
  // used one is refused by its family's revocation alone: probe 87a F1).
  const sqlite = world.main.db.$client;
  const family = sqlite
    .query<{ revokedAt: number | null }, [string]>(
      "SELECT revoked_at AS revokedAt FROM refresh_families WHERE id = ?",
    )
    .get(world.family);
  expect(family?.revokedAt).not.toBeNull();
  const live = sqlite
    .query<{ n: number }, [string]>(
      "SELECT count(*) AS n FROM refresh_tokens WHERE family_id = ? AND revoked_at IS NULL AND used_at IS NULL",
    )
    .get(world.family);
  expect(live?.n).toBe(0);

  // Past the in-memory revocation window (access lifetime + 60 s), and on a fresh instance.
  world.clock.advance(ACCESS_TTL_MS + 61_000);
  const restarted = anotherInstance(world.main, { clock: world.clock, env: ENV });
  cleanup.push(() => restarted.close());
  world.main.services.runMaintenance();
  await refused([...world.targets, restarted]);
  // Every token of it, used or not, is pruned then, and its family after them.
  expect(
    sqlite
      .query<{ n: number }, [string]>(
        "SELECT count(*) AS n FROM refresh_tokens WHERE family_id = ?",
      )
      .get(world.family)?.n,
  ).toBe(0);
}

for (const instances of [1, 2] as const) {
  describe(`refresh races on ${instances === 1 ? "one instance" : "two instances sharing one database file"}`, () => {
    for (const scenario of scenarios) {
      test(`${scenario.name}: every token of the family is refused afterwards`, async () => {
        for (let round = 0; round < scenario.rounds; round++) {
          const clock = new ManualClock();
          const main = buildTestApp({ clock, env: ENV });
          cleanup.push(() => main.close());
          const targets: Target[] = [main];
          if (instances === 2) {
            const other: Instance = anotherInstance(main, { clock, env: ENV });
            cleanup.push(() => other.close());
            targets.push(other);
          }
          const session = await signUp(main);
          const family = decodeJwt(session.accessToken).fam as string;
          const world: World = { main, clock, targets, session, family, round };

          const result = await scenario.race(world);
          scenario.check(result);
          await expectFamilyDead(world, result.minted);
          for (const step of cleanup.splice(0).reverse()) step();
        }
      }, 60_000);
    }
  });
}

describe("reuse detection is recorded", () => {
  test("the losers of a replay race are audited as auth.refresh.reused", async () => {
    const clock = new ManualClock();
    const main = buildTestApp({ clock, env: ENV });
    cleanup.push(() => main.close());
    const session = await signUp(main);
    const minted: Minted = { access: [], refresh: [] };
    await refreshOn(main, session.refreshToken, minted);
    clock.advance(REPEAT_GRACE_MS + 1);
    expect((await refreshOn(main, session.refreshToken, minted)).status).toBe(401);
    const reused = main.db.$client
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM audit_events WHERE type = 'auth.refresh.reused'",
      )
      .get();
    expect(reused?.n).toBe(1);
  });
});
