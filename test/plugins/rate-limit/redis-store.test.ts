import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import type { Policy } from "../../../src/plugins/rate-limit/policies";
import { RedisLimiterStore } from "../../../src/plugins/rate-limit/redis-store";
import { buildTestApp, send } from "../../support/app";
import { bearer, createKey } from "../../support/auth";
import { type RedisServer, redisAvailable, startRedis } from "../../support/redis";

const policy = (limit: number, burstLimit = limit, id = "test"): Policy => ({
  id,
  limit,
  windowMs: 60_000,
  burstLimit,
  failClosed: false,
});
const minuteStart = () => Math.floor(Date.now() / 60_000) * 60_000;

describe.skipIf(!redisAvailable)("RedisLimiterStore (a real redis-server)", () => {
  let redis: RedisServer;
  const stores: RedisLimiterStore[] = [];
  const store = () => {
    const made = new RedisLimiterStore(new RedisClient(redis.url));
    stores.push(made);
    return made;
  };
  let run = 0;
  const key = () => `k${++run}-${Date.now()}`;

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const s of stores) s.close();
    await redis.stop();
  });

  test("admits exactly the limit of concurrent checks", async () => {
    const s = store();
    const k = key();
    const now = minuteStart() + 1_000;
    const outcomes = await Promise.all(
      Array.from({ length: 80 }, () => s.check([{ policy: policy(50), key: k, now }])),
    );
    expect(outcomes.filter(([o]) => o!.admitted)).toHaveLength(50);
    expect(await s.peek(policy(50), k, now)).toBe(50);
  });

  test("two VMs (two clients) share one limit", async () => {
    const [a, b] = [store(), store()];
    const k = key();
    const now = minuteStart() + 1_000;
    const outcomes = await Promise.all(
      Array.from({ length: 120 }, (_, i) =>
        (i % 2 ? a : b).check([{ policy: policy(30), key: k, now }]),
      ),
    );
    expect(outcomes.filter(([o]) => o!.admitted)).toHaveLength(30);
  });

  test("windows slide, the burst window caps spikes, a refusal is not counted further on", async () => {
    const s = store();
    const k = key();
    const start = minuteStart();
    for (let i = 0; i < 10; i++) await s.check([{ policy: policy(10), key: k, now: start }]);
    const later = await Promise.all(
      Array.from({ length: 8 }, () =>
        s.check([{ policy: policy(10), key: k, now: start + 90_000 }]),
      ),
    );
    expect(later.filter(([o]) => o!.admitted)).toHaveLength(5);

    const burstKey = key();
    const burst = await Promise.all(
      Array.from({ length: 5 }, () =>
        s.check([{ policy: policy(10, 3), key: burstKey, now: start + 1_000 }]),
      ),
    );
    expect(burst.filter(([o]) => o!.admitted)).toHaveLength(3);

    const layered = key();
    const strict = policy(1, 1, "strict");
    const loose = policy(100, 100, "loose");
    await s.check([
      { policy: strict, key: layered, now: start },
      { policy: loose, key: layered, now: start },
    ]);
    const second = await s.check([
      { policy: strict, key: layered, now: start },
      { policy: loose, key: layered, now: start },
    ]);
    expect(second).toHaveLength(1);
    expect(await s.peek(loose, layered, start)).toBe(1);
  });

  test("keys expire by themselves once their windows have passed", async () => {
    const s = store();
    const k = key();
    await s.check([{ policy: policy(5), key: k, now: Date.now() }]);
    const client = new RedisClient(redis.url);
    const ttl = Number(await client.send("PTTL", [`palisade:rl:test:${k}`]));
    client.close();
    expect(ttl).toBeGreaterThan(60_000);
    expect(ttl).toBeLessThanOrEqual(120_000);
  });

  test("the app limits through Redis when REDIS_URL is set, and /ready reports it", async () => {
    const target = buildTestApp({ env: { REDIS_URL: redis.url, RATE_LIMIT_PER_MINUTE: "2" } });
    await target.services.start();
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++)
        statuses.push((await send(target, "/openapi.json", { peer: "192.0.2.33" })).status);
      expect(statuses).toEqual([200, 200, 429]);
      const ready = (await (await send(target, "/ready")).json()) as {
        checks: Record<string, { status: string }>;
      };
      expect(ready.checks.redis?.status).toBe("up");
      const { key: apiKey } = createKey(target, ["chat"]);
      expect((await send(target, "/api/auth/me", { headers: bearer(apiKey) })).status).toBe(200);
    } finally {
      target.close();
    }
  });

  test("with Redis down, public routes stay open, auth routes answer 503, /ready says so", async () => {
    const own = await startRedis();
    const target = buildTestApp({ env: { REDIS_URL: own.url } });
    await target.services.start();
    try {
      expect((await send(target, "/openapi.json")).status).toBe(200);
      await own.stop();
      expect((await send(target, "/openapi.json")).status).toBe(200);
      const login = await send(target, "/api/auth/login", {
        body: { email: "a@example.test", password: "whatever-it-is" },
      });
      expect(login.status).toBe(503);
      const ready = await send(target, "/ready");
      expect(ready.status).toBe(503);
    } finally {
      target.close();
    }
  });
});
