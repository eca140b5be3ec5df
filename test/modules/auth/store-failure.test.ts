/**
 * The session store failing under logout and refresh: the database locked by another connection
 * past the busy timeout, or not writable. Each is 503 SERVICE_UNAVAILABLE with Retry-After and no
 * detail of the failure, and nothing is half done: once the store is back, the same logout or
 * refresh succeeds (the refresh token was not consumed by the failed attempt).
 */
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { REPEAT_GRACE_MS } from "../../../src/modules/auth/service";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import type { LimiterStore } from "../../../src/plugins/rate-limit/store";
import { buildTestApp, send, type TestApp, tempDir } from "../../support/app";
import { bearer, logIn, type Session, STRONG_PASSWORD, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";

const ENV = { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" };

interface Failure {
  name: string;
  /** Makes the app's store fail; returns how to undo it. */
  break(target: TestApp): () => void;
}

const FAILURES: Failure[] = [
  {
    name: "locked by another connection",
    break(target) {
      // The app waits 50 ms instead of 5 s for the lock, so the test is quick.
      target.db.$client.run("PRAGMA busy_timeout = 50");
      const other = new Database(target.databasePath);
      other.run("BEGIN EXCLUSIVE");
      other.run("DELETE FROM rate_limit_counters WHERE 0");
      return () => {
        other.run("ROLLBACK");
        other.close();
        target.db.$client.run("PRAGMA busy_timeout = 5000");
      };
    },
  },
  {
    name: "read-only",
    break(target) {
      target.db.$client.run("PRAGMA query_only = ON");
      return () => target.db.$client.run("PRAGMA query_only = OFF");
    },
  },
];

interface Operation {
  name: string;
  run(target: TestApp, session: Session): Promise<Response>;
  succeeded: number;
}

const OPERATIONS: Operation[] = [
  {
    name: "logout",
    run: (target, session) =>
      send(target, "/api/auth/logout", { method: "POST", headers: bearer(session.accessToken) }),
    succeeded: 204,
  },
  {
    name: "refresh",
    run: (target, session) =>
      send(target, "/api/auth/refresh", { body: { refreshToken: session.refreshToken } }),
    succeeded: 200,
  },
];

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

describe("a failing session store", () => {
  for (const failure of FAILURES) {
    for (const operation of OPERATIONS) {
      test(`${failure.name}: ${operation.name} is 503 SERVICE_UNAVAILABLE, and works once the store is back`, async () => {
        current = buildTestApp({ env: ENV });
        const session = await signUp(current);
        const restore = failure.break(current);
        let response: Response;
        try {
          response = await operation.run(current, session);
        } finally {
          restore();
        }
        expect(response.status).toBe(503);
        expect(response.headers.get("content-type")).toContain("application/problem+json");
        expect(response.headers.get("retry-after")).toBe("1");
        const body = await response.text();
        expect(JSON.parse(body).code).toBe("SERVICE_UNAVAILABLE");
        expect(body).not.toMatch(/SQLITE|locked|readonly|at \//i);

        const again = await operation.run(current, session);
        expect(again.status).toBe(operation.succeeded);
      });
    }
  }

  test("a reuse detected while the store is read-only is 503, and is still detected afterwards", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ env: ENV, clock });
    const session = await signUp(current);
    const first = await send(current, "/api/auth/refresh", {
      body: { refreshToken: session.refreshToken },
    });
    expect(first.status).toBe(200);
    const { refreshToken: child } = (await first.json()) as { refreshToken: string };
    // Past the grace in which the same token is a repeat (refresh-repeat.test.ts).
    clock.advance(REPEAT_GRACE_MS + 1);
    const restore = FAILURES[1]!.break(current);
    const replay = await send(current, "/api/auth/refresh", {
      body: { refreshToken: session.refreshToken },
    });
    restore();
    expect(replay.status).toBe(503);
    // The replay had no effect, so it is caught again, and it ends the family then.
    const again = await send(current, "/api/auth/refresh", {
      body: { refreshToken: session.refreshToken },
    });
    expect(again.status).toBe(401);
    const childAfter = await send(current, "/api/auth/refresh", { body: { refreshToken: child } });
    expect(childAfter.status).toBe(401);
  });
});

/**
 * A limiter store that works, but fails the login lockout's calls while `broken` says so (the
 * rate-limit stage's own checks of the login route keep working, so the lockout's are reached).
 */
function lockoutFailingStore(broken: { check: boolean; giveBack: boolean }): LimiterStore {
  const dir = tempDir();
  const db = openDatabase(join(dir.path, "limiter.db"));
  applyMigrations(db);
  const inner = new SqliteLimiterStore({ sqlite: db.$client });
  const failure = () => Promise.reject(new Error("disk I/O error (SQLITE_IOERR) at /var/lib/x"));
  return {
    check: (checks) =>
      broken.check && checks.some((c) => c.policy.id === "lockout")
        ? failure()
        : inner.check(checks),
    // As the stores do when the write fails: nothing is uncounted, nothing is thrown.
    giveBack: (permits) => {
      if (!(broken.giveBack && permits.some((p) => p.policy.id === "lockout"))) {
        inner.giveBack(permits);
      }
    },
    reset: (policy, key) => inner.reset(policy, key),
    prune: (now) => inner.prune(now),
    close: () => {
      inner.close();
      db.$client.close();
      dir.remove();
    },
  };
}

describe("a failing login lockout store", () => {
  const wrong = (target: TestApp, email: string) =>
    send(target, "/api/auth/login", { body: { email, password: "not-the-password-1!" } });

  test("a lockout that cannot count refuses every login with 503, never a verdict, logged and counted, and works once back", async () => {
    const broken = { check: false, giveBack: false };
    const store = lockoutFailingStore(broken);
    try {
      current = buildTestApp({ env: ENV, limiter: store });
      const user = await signUp(current);
      broken.check = true;
      for (const password of ["not-the-password-1!", STRONG_PASSWORD]) {
        const response = await send(current, "/api/auth/login", {
          body: { email: user.email, password },
          headers: { "x-request-id": "lockout-down" },
        });
        expect(response.status).toBe(503);
        expect(response.headers.get("retry-after")).toBe("1");
        const body = await response.text();
        expect(JSON.parse(body).code).toBe("SERVICE_UNAVAILABLE");
        expect(body).not.toMatch(/SQLITE|I\/O|var\/lib/);
      }
      // The first failure is logged whole; the second only counted, and summed up at the end of
      // the 10 s (here: the flush a shutdown makes).
      const logged = current.logs.entries.filter((e) => e.msg === "rate-limit store failed");
      expect(logged).toHaveLength(1);
      expect(logged[0]!.requestId).toBe("lockout-down");
      current.logger.flush();
      const summed = current.logs.entries.filter((e) => e.repeated !== undefined);
      expect(summed).toMatchObject([
        {
          level: "error",
          repeated:
            "rate-limit store failed (lockout), refused — Error: disk I/O error (SQLITE_IOERR) at /var/lib/x",
          count: 1,
        },
      ]);
      expect(summed[0]!.lastRequestId).toBe("lockout-down");
      const metrics = await (await send(current, "/metrics")).text();
      expect(metrics).toContain('rate_limit_store_errors_total{mode="closed"} 2');

      broken.check = false;
      expect((await wrong(current, user.email)).status).toBe(401);
      expect((await logIn(current, user.email)).accessToken).toBeString();
    } finally {
      store.close();
    }
  });

  test("a right password whose count cannot be given back still signs in; the count stays, never more verdicts", async () => {
    const broken = { check: false, giveBack: true };
    const store = lockoutFailingStore(broken);
    try {
      current = buildTestApp({
        env: { ...ENV, RATE_LIMIT_LOGIN: "1000", RATE_LIMIT_BURST: "1000" },
        limiter: store,
      });
      const user = await signUp(current);
      // signUp signed in once: counted, and not given back.
      for (let i = 0; i < 7; i++) expect((await wrong(current, user.email)).status).toBe(401);
      // Two more sign-ins, each counted as a failure not given back: the lockout's 10 are spent.
      for (let i = 0; i < 2; i++)
        expect((await logIn(current, user.email)).accessToken).toBeString();
      expect((await wrong(current, user.email)).status).toBe(429);
    } finally {
      store.close();
    }
  });
});

describe("logging in while the account changes", () => {
  test("an erasure landing while a login checks the password is 401, never 500", async () => {
    const target = buildTestApp({
      env: { RATE_LIMIT_PER_MINUTE: "10000", RATE_LIMIT_BURST: "10000" },
    });
    try {
      const statuses: number[] = [];
      for (let delay = 0; delay < 24; delay++) {
        const user = await signUp(target, { peer: `10.77.${delay}.1` });
        const login = send(target, "/api/auth/login", {
          body: { email: user.email, password: STRONG_PASSWORD },
          peer: `10.78.${delay}.1`,
        });
        await Bun.sleep(delay % 6);
        const erased = await send(target, "/api/me", {
          method: "DELETE",
          headers: bearer(user.accessToken),
          peer: `10.79.${delay}.1`,
        });
        expect(erased.status).toBe(204);
        const response = await login;
        statuses.push(response.status);
        if (response.status === 200) {
          // Logged in first: erasure then ended that session too.
          const { accessToken } = (await response.json()) as { accessToken: string };
          expect(
            (await send(target, "/api/auth/me", { headers: bearer(accessToken) })).status,
          ).toBe(401);
        }
      }
      expect(statuses.filter((status) => status !== 200 && status !== 401)).toEqual([]);
      const orphans = target.db.$client
        .query(
          "SELECT count(*) AS n FROM refresh_families WHERE user_id NOT IN (SELECT id FROM users)",
        )
        .get() as { n: number };
      expect(orphans.n).toBe(0);
    } finally {
      target.close();
    }
  });

  test("a role change landing while a login signs its tokens gives tokens with the new role", async () => {
    const target = buildTestApp({
      env: { RATE_LIMIT_PER_MINUTE: "10000", RATE_LIMIT_BURST: "10000" },
    });
    try {
      for (let delay = 0; delay < 12; delay++) {
        const user = await signUp(target, { role: "admin", peer: `10.80.${delay}.1` });
        const login = send(target, "/api/auth/login", {
          body: { email: user.email, password: STRONG_PASSWORD },
          peer: `10.81.${delay}.1`,
        });
        await Bun.sleep(delay % 6);
        target.services.auth.setRole(user.userId, "user", "test");
        const response = await login;
        expect(response.status).toBe(200);
        const { accessToken } = (await response.json()) as { accessToken: string };
        const admin = await send(target, "/api/admin/blocks", { headers: bearer(accessToken) });
        expect(admin.status).not.toBe(200);
      }
    } finally {
      target.close();
    }
  });
});
