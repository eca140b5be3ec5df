import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { RedisClient } from "bun";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp, tempDir } from "../../support/app";
import { runToExit } from "../../support/process";
import { type RedisServer, redisAvailable, startRedis } from "../../support/redis";
import { waitFor } from "../../support/wait";

type Ready = { checks: Record<string, { status: string; error?: string }> };

async function readyRedis(
  target: TestApp,
): Promise<{ status: number; redis: Ready["checks"][string] }> {
  const response = await send(target, "/ready");
  const body = (await response.json()) as Ready;
  return { status: response.status, redis: body.checks.redis! };
}

async function withRedis(
  settings: readonly string[],
  run: (redis: RedisServer) => Promise<void>,
): Promise<void> {
  const redis = await startRedis(settings);
  try {
    await run(redis);
  } finally {
    await redis.stop();
  }
}

/** A Redis ACL user allowed every command on the keys `keys` only; its REDIS_URL. */
async function aclUser(redis: RedisServer, name: string, keys: string): Promise<string> {
  const admin = new RedisClient(redis.url);
  await admin.send("ACL", ["SETUSER", name, "on", `>${name}-pass-0123456789`, keys, "+@all"]);
  admin.close();
  return `redis://${name}:${name}-pass-0123456789@${new URL(redis.url).host}`;
}

/** `bun run src/index.ts` in production on `redisUrl`, with a new database, to its exit. */
async function productionStart(redisUrl: string) {
  const dir = tempDir();
  try {
    return await runToExit(["bun", "run", "src/index.ts"], {
      ...PRODUCTION_ENV,
      DATABASE_PATH: join(dir.path, "production.db"),
      PORT: "0",
      REDIS_URL: redisUrl,
    });
  } finally {
    dir.remove();
  }
}

describe.skipIf(!redisAvailable)(
  "the limiter's Redis at the start and in /ready (a real redis-server)",
  () => {
    test("a Redis down longer than the client's own reconnecting is connected again once it is back (probe 80b F1)", async () => {
      let redis = await startRedis();
      const port = Number(new URL(redis.url).port);
      // Bun's client gives up after its retries (about half a minute by default): here at once.
      const target = buildTestApp({ env: { REDIS_URL: redis.url }, redisMaxRetries: 0 });
      try {
        expect(await target.services.start()).toBeNull();
        expect((await readyRedis(target)).status).toBe(200);
        await redis.stop();
        await waitFor(async () => (await readyRedis(target)).status === 503, { intervalMs: 50 });
        // Well past the client's giving up before Redis is back.
        await Bun.sleep(1500);
        redis = await startRedis([], port);
        await waitFor(async () => (await readyRedis(target)).status === 200, { intervalMs: 50 });
        const limited = await send(target, "/api/auth/csrf", { peer: "10.80.0.1" });
        expect(limited.status).toBe(200);
        expect(limited.headers.get("x-ratelimit-remaining")).not.toBeNull();
        expect(target.logs.entries.some((entry) => entry.redis === "reconnected")).toBe(true);
      } finally {
        target.close();
        await redis.stop();
      }
    });

    test("a Redis that may evict keys is said at the start and not ready, with the reason, whichever evicting policy; noeviction is ready (probe 46c F2)", async () => {
      await withRedis(["--maxmemory-policy", "allkeys-lru"], async (redis) => {
        const target = buildTestApp({ env: { REDIS_URL: redis.url } });
        const admin = new RedisClient(redis.url);
        try {
          expect(await target.services.start()).toBeNull();
          const warned = target.logs.entries.filter((entry) => entry.redis === "evicting policy");
          expect(warned).toHaveLength(1);
          expect(warned[0]!.level).toBe("warn");
          expect(warned[0]!.msg).toContain("maxmemory-policy is allkeys-lru");
          const evicting = await readyRedis(target);
          expect(evicting.status).toBe(503);
          expect(evicting.redis.status).toBe("down");
          expect(evicting.redis.error).toStartWith(
            "maxmemory-policy is allkeys-lru: Redis may evict lockouts",
          );
          // Changed while running: /ready follows it.
          await admin.send("CONFIG", ["SET", "maxmemory-policy", "volatile-lru"]);
          expect((await readyRedis(target)).redis.error).toContain("volatile-lru");
          await admin.send("CONFIG", ["SET", "maxmemory-policy", "noeviction"]);
          expect(await readyRedis(target)).toMatchObject({ status: 200, redis: { status: "up" } });
        } finally {
          admin.close();
          target.close();
        }
      });
    });

    test("a policy that starts evicting while the service runs is logged once by the maintenance, and its return to noeviction (probe 47b F3)", async () => {
      await withRedis(["--maxmemory-policy", "noeviction"], async (redis) => {
        const target = buildTestApp({ env: { REDIS_URL: redis.url } });
        const admin = new RedisClient(redis.url);
        const said = (level: string) =>
          target.logs.entries.filter(
            (entry) =>
              entry.level === level &&
              (entry.redis === "evicting policy" || entry.redis === "noeviction"),
          );
        try {
          expect(await target.services.start()).toBeNull();
          expect(said("warn")).toEqual([]);
          await admin.send("CONFIG", ["SET", "maxmemory-policy", "allkeys-lru"]);
          // Three looks, each finished before the next (a look still running is not started again).
          for (let look = 0; look < 3; look++) {
            target.services.runMaintenance();
            await waitFor(() => said("error").length > 0, { what: "the evicting policy's line" });
            await Bun.sleep(50);
          }
          expect(await readyRedis(target)).toMatchObject({ status: 503 });
          expect(said("error").map((entry) => entry.msg)).toEqual([
            "redis: maxmemory-policy is allkeys-lru: Redis may evict lockouts, sign-in counts and limits (set maxmemory-policy noeviction on the limiter's Redis); /ready answers 503 until then",
          ]);
          await admin.send("CONFIG", ["SET", "maxmemory-policy", "noeviction"]);
          target.services.runMaintenance();
          await waitFor(() => said("info").length > 0, { what: "the noeviction line" });
          expect(said("info")).toHaveLength(1);
        } finally {
          admin.close();
          target.close();
        }
      });
    });

    test("CONFIG renamed away: the policy is read from INFO; CONFIG and INFO both refused: said once, and ready", async () => {
      await withRedis(
        ["--rename-command", "CONFIG", "", "--maxmemory-policy", "volatile-ttl"],
        async (redis) => {
          const renamed = buildTestApp({ env: { REDIS_URL: redis.url } });
          try {
            await renamed.services.start();
            expect((await readyRedis(renamed)).redis.error).toContain(
              "maxmemory-policy is volatile-ttl",
            );
          } finally {
            renamed.close();
          }
          const admin = new RedisClient(redis.url);
          await admin.send("ACL", [
            "SETUSER",
            "limiter",
            "on",
            ">limiter-pw-1",
            "~*",
            "+@all",
            "-info",
          ]);
          admin.close();
          const blind = buildTestApp({
            env: { REDIS_URL: redis.url.replace("redis://", "redis://limiter:limiter-pw-1@") },
          });
          try {
            expect(await blind.services.start()).toBeNull();
            expect((await readyRedis(blind)).status).toBe(200);
            expect((await readyRedis(blind)).status).toBe(200);
            const unknown = blind.logs.entries.filter(
              (entry) => entry.redis === "maxmemory-policy unknown",
            );
            expect(unknown).toHaveLength(1);
            expect(unknown[0]!.msg).toContain("could not be read");
          } finally {
            blind.close();
          }
        },
      );
    });

    test("keys Redis evicts are logged by the maintenance, once per look that finds more (probe 46c F2)", async () => {
      await withRedis(["--maxmemory-policy", "allkeys-random"], async (redis) => {
        const target = buildTestApp({ env: { REDIS_URL: redis.url } });
        const filler = new RedisClient(redis.url);
        const evictedLines = () =>
          target.logs.entries.filter((entry) => entry.redis === "evicted keys");
        try {
          await target.services.start();
          // Another application's cache fills the memory Redis may use.
          const info = String(await filler.send("INFO", ["memory"]));
          const used = Number(/used_memory:(\d+)/.exec(info)![1]);
          await filler.send("CONFIG", ["SET", "maxmemory", String(used + 1_000_000)]);
          const value = "x".repeat(10_000);
          for (let i = 0; i < 300; i++) await filler.send("SET", [`cache:${i}`, value]);
          target.services.runMaintenance();
          await waitFor(() => evictedLines().length === 1, { what: "the evictions logged" });
          const line = evictedLines()[0]!;
          expect(line.level).toBe("error");
          expect(line.evictedKeys).toBeGreaterThan(0);
          expect(line.msg).toContain("keys since the last look");
          // Nothing evicted since: nothing said.
          target.services.runMaintenance();
          await Bun.sleep(100);
          expect(evictedLines()).toHaveLength(1);
        } finally {
          filler.close();
          target.close();
        }
      });
    });

    test("REDIS_URL's database: /2 counts there, not in database 0; one past the server's databases is said with the server's reason (probe 46c F3)", async () => {
      await withRedis(["--databases", "4"], async (redis) => {
        const target = buildTestApp({
          env: { REDIS_URL: `${redis.url}/2`, RATE_LIMIT_PER_MINUTE: "2" },
        });
        const database0 = new RedisClient(redis.url);
        const database2 = new RedisClient(`${redis.url}/2`);
        try {
          await target.services.start();
          const statuses: number[] = [];
          for (let i = 0; i < 3; i++) {
            statuses.push((await send(target, "/openapi.json", { peer: "192.0.2.46" })).status);
          }
          expect(statuses).toEqual([200, 200, 429]);
          const counted = (await database2.send("KEYS", ["palisade:rl:*192.0.2.46*"])) as string[];
          expect(counted).toContain("palisade:rl:default:ip:192.0.2.46");
          expect(await database0.send("KEYS", ["palisade:*"])).toEqual([]);
        } finally {
          database0.close();
          database2.close();
          target.close();
        }
        const beyond = buildTestApp({ env: { REDIS_URL: `${redis.url}/4` } });
        try {
          await beyond.services.start();
          const refused = beyond.logs.entries.filter((entry) => entry.redis === "database refused");
          expect(refused).toHaveLength(1);
          expect(refused[0]).toMatchObject({ level: "error", database: 4 });
          expect(refused[0]!.msg).toContain("ERR DB index is out of range");
          expect((await readyRedis(beyond)).status).toBe(503);
        } finally {
          beyond.close();
        }
      });
    });

    test("credentials the server refuses are said at the start with the server's reason, never as an unreachable Redis, and never with the password", async () => {
      await withRedis([], async (redis) => {
        const admin = new RedisClient(redis.url);
        await admin.send("CONFIG", ["SET", "requirepass", "right-pass-0123456789"]);
        admin.close();
        const port = new URL(redis.url).port;
        const cases = [
          [`redis://:wrong-pass-0123456789@127.0.0.1:${port}`, "WRONGPASS"],
          [`redis://someone:wrong-pass-0123456789@127.0.0.1:${port}`, "WRONGPASS"],
          [`redis://127.0.0.1:${port}`, "NOAUTH"],
        ] as const;
        for (const [url, word] of cases) {
          const target = buildTestApp({ env: { REDIS_URL: url } });
          try {
            expect(await target.services.start()).toBeNull();
            const said = target.logs.entries.filter((entry) => entry.redis !== undefined);
            expect([url, said.map((entry) => entry.redis)]).toEqual([url, ["credentials refused"]]);
            expect(said[0]).toMatchObject({ level: "error" });
            expect(said[0]!.msg).toContain(`redis refuses REDIS_URL's credentials (${word}`);
            expect(target.logs.text).not.toContain("pass-0123456789");
            expect((await readyRedis(target)).status).toBe(503);
          } finally {
            target.close();
          }
        }
        // The right password: nothing said.
        const right = buildTestApp({
          env: { REDIS_URL: `redis://:right-pass-0123456789@127.0.0.1:${port}` },
        });
        try {
          expect(await right.services.start()).toBeNull();
          expect(right.logs.entries.filter((entry) => entry.level === "error")).toEqual([]);
          expect((await readyRedis(right)).status).toBe(200);
        } finally {
          right.close();
        }
      });
    });

    test("a Redis whose ACL refuses scripts is said at the start and not ready; production refuses it (probe 80b F2)", async () => {
      await withRedis([], async (redis) => {
        const admin = new RedisClient(redis.url);
        await admin.send("ACL", [
          "SETUSER",
          "default",
          "on",
          "nopass",
          "~*",
          "&*",
          "+@all",
          "-@scripting",
        ]);
        admin.close();
        const target = buildTestApp({ env: { REDIS_URL: redis.url } });
        try {
          expect(await target.services.start()).toBeNull();
          const said = target.logs.entries.filter((entry) => entry.redis === "scripts refused");
          expect(said).toHaveLength(1);
          expect(said[0]!.msg).toStartWith("Redis refuses the limiter's scripts (SCRIPT LOAD");
          const ready = await readyRedis(target);
          expect(ready.status).toBe(503);
          expect(ready.redis.error).toStartWith("Redis refuses the limiter's scripts");
        } finally {
          target.close();
        }
        const result = await productionStart(redis.url);
        expect(result.code).toBe(2);
        expect(result.stderr.trim()).toStartWith(
          "palisade: refusing to start: REDIS_URL's Redis refuses the limiter's scripts (SCRIPT LOAD, EVALSHA and EVAL are needed: ",
        );
      });
    }, 30_000);

    test("a read-only replica is said at the start as one and not ready; production refuses it (probe 85b F1)", async () => {
      await withRedis([], async (primary) => {
        const replica = await startRedis(["--replicaof", "127.0.0.1", new URL(primary.url).port]);
        try {
          const target = buildTestApp({ env: { REDIS_URL: replica.url } });
          try {
            expect(await target.services.start()).toBeNull();
            const said = target.logs.entries.filter((entry) => entry.redis === "read-only");
            expect(said).toHaveLength(1);
            expect(said[0]!.level).toBe("error");
            expect(said[0]!.msg).toStartWith("Redis is a read-only replica (READONLY ");
            expect(said[0]!.msg).toContain("name the primary in REDIS_URL");
            expect((await readyRedis(target)).status).toBe(503);
          } finally {
            target.close();
          }
          const result = await productionStart(replica.url);
          expect(result.code).toBe(2);
          expect(result.stderr.trim()).toStartWith(
            "palisade: refusing to start: REDIS_URL's Redis is a read-only replica (READONLY ",
          );
          // The primary itself is ready: the scripts' key is written and gone in a second.
          const onPrimary = buildTestApp({ env: { REDIS_URL: primary.url } });
          try {
            expect(await onPrimary.services.start()).toBeNull();
            expect(onPrimary.logs.entries.filter((entry) => entry.level === "error")).toEqual([]);
            expect((await readyRedis(onPrimary)).status).toBe(200);
          } finally {
            onPrimary.close();
          }
        } finally {
          await replica.stop();
        }
      });
    }, 30_000);

    test("a Redis that refuses writes for a passing reason (replicas missing) is not ready, and is no refusal at the start, production's included (probe 85d F4)", async () => {
      await withRedis(["--min-replicas-to-write", "1"], async (redis) => {
        for (const env of [{}, PRODUCTION_ENV]) {
          const target = buildTestApp({ env: { ...env, REDIS_URL: redis.url } });
          try {
            expect(await target.services.start()).toBeNull();
            expect(
              target.logs.entries.filter(
                (entry) => entry.redis === "read-only" || entry.redis === "scripts refused",
              ),
            ).toEqual([]);
            const ready = await readyRedis(target);
            expect(ready.status).toBe(503);
            expect(ready.redis.error).toContain("NOREPLICAS");
          } finally {
            target.close();
          }
        }
      });
    }, 30_000);

    test("an ACL user limited to the limiter's namespace (~palisade:rl:*) is ready and limits (probe 85d F4: the readiness key was outside it)", async () => {
      await withRedis([], async (redis) => {
        const url = await aclUser(redis, "limiter", "~palisade:rl:*");
        const target = buildTestApp({
          env: { REDIS_URL: url, RATE_LIMIT_PER_MINUTE: "2", RATE_LIMIT_BURST: "100" },
        });
        try {
          expect(await target.services.start()).toBeNull();
          expect(target.logs.entries.filter((entry) => entry.level === "error")).toEqual([]);
          expect((await readyRedis(target)).status).toBe(200);
          const statuses: number[] = [];
          for (let i = 0; i < 3; i++) {
            statuses.push((await send(target, "/api/auth/csrf", { peer: "192.0.2.61" })).status);
          }
          expect(statuses).toEqual([200, 200, 429]);
        } finally {
          target.close();
        }
      });
    }, 30_000);

    test("an ACL user denied the limiter's keys is said at the start and not ready; production refuses it (probe 85g F3)", async () => {
      await withRedis([], async (redis) => {
        const url = await aclUser(redis, "other", "~other:*");
        const target = buildTestApp({ env: { REDIS_URL: url } });
        try {
          expect(await target.services.start()).toBeNull();
          const said = target.logs.entries.filter((entry) => entry.redis === "keys refused");
          expect(said).toHaveLength(1);
          expect(said[0]!.msg).toStartWith("Redis refuses the limiter's keys (NOPERM");
          expect((await readyRedis(target)).status).toBe(503);
        } finally {
          target.close();
        }
        const result = await productionStart(url);
        expect(result.code).toBe(2);
        expect(result.stderr.trim()).toStartWith(
          "palisade: refusing to start: REDIS_URL's Redis refuses the limiter's keys (NOPERM",
        );
      });
    }, 30_000);

    test("production refuses to start on a Redis that may evict keys: exit 2, one line naming REDIS_URL (probe 46c F2)", async () => {
      await withRedis(["--maxmemory-policy", "volatile-lru"], async (redis) => {
        const result = await productionStart(redis.url);
        expect(result.code).toBe(2);
        expect(result.stderr.trim()).toBe(
          "palisade: refusing to start: REDIS_URL's Redis: maxmemory-policy is volatile-lru: Redis may evict lockouts, sign-in counts and limits (set maxmemory-policy noeviction on the limiter's Redis)",
        );
        expect(result.stdout).not.toContain('"msg":"listening"');
      });
    }, 30_000);
  },
);
