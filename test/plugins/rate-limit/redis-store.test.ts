import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import { parseIp } from "../../../src/plugins/client-ip/address";
import { LeasingStore } from "../../../src/plugins/rate-limit/lease";
import { RedisLimiterStore } from "../../../src/plugins/rate-limit/redis-store";
import { buildTestApp, send } from "../../support/app";
import { bearer, createKey, STRONG_PASSWORD, signUp } from "../../support/auth";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";
import { anotherInstance } from "../../support/instance";
import { type RedisServer, redisAvailable, startRedis } from "../../support/redis";
import { waitFor } from "../../support/wait";
import { limiterStoreContract, minuteStart, policy } from "./store-contract";
import { redisEstimate } from "./stored-estimate";

describe.skipIf(!redisAvailable)("RedisLimiterStore (a real redis-server)", () => {
  let redis: RedisServer;
  // Two clients on one server: what two VMs share.
  limiterStoreContract("RedisLimiterStore", () => {
    const stores = [
      new RedisLimiterStore(new RedisClient(redis.url)),
      new RedisLimiterStore(new RedisClient(redis.url)),
    ] as const;
    const reader = new RedisClient(redis.url);
    return {
      stores: [stores[0], stores[1]],
      estimate: redisEstimate(reader),
      close() {
        for (const store of stores) store.close();
        reader.close();
      },
    };
  });
  // The same with leases allowed for any limit, so the contract's small limits lease too.
  limiterStoreContract("LeasingStore over Redis", () => {
    const stores = [0, 1].map(
      () => new LeasingStore(new RedisLimiterStore(new RedisClient(redis.url)), { minLimit: 1 }),
    );
    const reader = new RedisClient(redis.url);
    return {
      stores: [stores[0]!, stores[1]!],
      estimate: redisEstimate(reader),
      close() {
        for (const store of stores) store.close();
        reader.close();
      },
    };
  });
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

  test("leases over Redis: counted when taken, given back in their window when unused", async () => {
    const k = key();
    const leasing = new LeasingStore(store(), { ttlMs: 40 });
    const other = store();
    const big = policy(1_000);
    const w = minuteStart();
    const client = new RedisClient(redis.url);
    const counts = async () =>
      ((await client.hmget(`palisade:rl:test:${k}`, ["cur", "prev"])) as string[]).map(Number);
    try {
      for (let i = 0; i < 3; i++)
        await leasing.check([{ policy: big, key: k, now: w + 59_950 + i }]);
      expect(await counts()).toEqual([6, 0]);
      // Another VM rolls the window; the lease's 3 come back out of `previous`.
      await other.check([{ policy: big, key: k, now: w + 60_010 }]);
      await waitFor(async () => (await counts())[1] === 3, { what: "the lease given back" });
      expect(await counts()).toEqual([1, 3]);
    } finally {
      client.close();
    }
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

  test("a check stamped in the window before the key's does not shorten the key's life", async () => {
    const s = store();
    const k = key();
    // Each VM sets the expiry from its own clock: the one ahead counted 1 s into a minute (the key
    // matters for 119 s more), the one behind 50 ms before that minute.
    const next = Math.floor(Date.now() / 60_000) * 60_000 + 60_000;
    await s.check([{ policy: policy(5), key: k, now: next + 1_000 }]);
    await s.check([{ policy: policy(5), key: k, now: next - 50 }]);
    const client = new RedisClient(redis.url);
    const ttl = Number(await client.send("PTTL", [`palisade:rl:test:${k}`]));
    client.close();
    // Expiring at the end of the behind VM's next minute (60 s) would lose the count while it
    // still weighs in the minute after.
    expect(ttl).toBeGreaterThan(115_000);
  });

  test("a VM whose clock is ahead does not cut short a key the others still count", async () => {
    const [onTime, ahead] = [store(), store()];
    const k = key();
    const start = Math.floor(Date.now() / 60_000) * 60_000;
    // Counted on time 1 s into a minute (it matters for 119 s more), then by a clock 5 s ahead.
    await onTime.check([{ policy: policy(5), key: k, now: start + 1_000 }]);
    await ahead.check([{ policy: policy(5), key: k, now: start + 6_000 }]);
    const client = new RedisClient(redis.url);
    const ttl = Number(await client.send("PTTL", [`palisade:rl:test:${k}`]));
    client.close();
    expect(ttl).toBeGreaterThan(116_000);
  });

  test("a VM whose clock is behind decides at the instant the key was last decided, as the one ahead would", async () => {
    const [ahead, behind] = [store(), store()];
    const k = key();
    const start = Math.floor(Date.now() / 60_000) * 60_000;
    const sixty = policy(60, 1000);
    const count = async (s: RedisLimiterStore, n: number, now: number) => {
      const outcomes = await Promise.all(
        Array.from({ length: n }, () => s.check([{ policy: sixty, key: k, now }])),
      );
      return outcomes.filter(([o]) => o!.admitted).length;
    };
    // 40 in one minute, then 10 half way through the next: the 40 weigh 20, 30 of 60 used.
    expect(await count(ahead, 40, start + 100)).toBe(40);
    expect(await count(ahead, 10, start + 90_000)).toBe(10);
    // A clock 40 s behind, still in the first minute: 30 more fit, as on the VM ahead. Decided at
    // the second minute's start, the 40 would weigh fully: 10 more, and the client refused.
    expect(await count(behind, 35, start + 50_000)).toBe(30);
    expect(await count(ahead, 1, start + 90_000)).toBe(0);
  });

  test("keys counted two or more windows ahead are started afresh and reported, once per decision", async () => {
    const reported: number[] = [];
    const behind = new RedisLimiterStore(new RedisClient(redis.url), {
      onClockSkew: (keys) => reported.push(keys),
    });
    stores.push(behind);
    const ahead = store();
    const k = key();
    const start = Math.floor(Date.now() / 60_000) * 60_000;
    // Seconds apart (one window): decided in the key's window, nothing reported.
    await ahead.check([{ policy: policy(1), key: k, now: start + 60_100 }]);
    const [near] = await behind.check([{ policy: policy(1), key: k, now: start + 59_900 }]);
    expect(near!.admitted).toBe(false);
    expect(reported).toEqual([]);
    // Two minutes apart: started afresh, and said.
    const [far] = await behind.check([
      { policy: policy(1), key: k, now: start - 60_000 + 100 },
      { policy: policy(1, 1, "other"), key: k, now: start - 60_000 + 100 },
    ]);
    expect(far!.admitted).toBe(true);
    expect(reported).toEqual([1]);
  });

  test("the app counts clock skew between VMs in /metrics and logs it once a minute", async () => {
    const env = { REDIS_URL: redis.url, RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" };
    const onTime = new ManualClock(1_000);
    const late = new ManualClock(1_000);
    late.advance(-3 * 60_000);
    const target = buildTestApp({ clock: onTime, env });
    const other = anotherInstance(target, { clock: late, env });
    await target.services.start();
    await other.services.start();
    try {
      for (let i = 0; i < 3; i++) {
        // Both from 127.0.0.1: one client, one key, alternating between the VMs.
        expect((await send(target, "/openapi.json")).status).toBe(200);
        expect((await send(other, "/openapi.json")).status).toBe(200);
      }
      const metrics = await (await send(other, "/metrics")).text();
      expect(metrics).toMatch(/^rate_limit_clock_skew_total [1-9]/m);
      const warnings = other.logs.entries.filter((e) => String(e.msg).includes("clock"));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]!.msg).toContain("timedatectl");
    } finally {
      other.close();
      target.close();
    }
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

  test("the sign-in lockout holds across two VMs whose clocks are 50 ms apart at a window's start", async () => {
    const WINDOW = 15 * 60_000;
    const env = {
      REDIS_URL: redis.url,
      RATE_LIMIT_LOGIN: "1000",
      RATE_LIMIT_PER_MINUTE: "1000",
      RATE_LIMIT_BURST: "1000",
      IP_BLOCK_FAILED_LOGINS: "0",
    };
    // 20 ms into a quarter hour on one VM, 30 ms before it on the other.
    const ahead = new ManualClock(0, WINDOW);
    ahead.advance(WINDOW + 20);
    const behind = new ManualClock(0, WINDOW);
    behind.advance(WINDOW - 30);
    const target = buildTestApp({ clock: ahead, env });
    const other = anotherInstance(target, { clock: behind, env });
    await target.services.start();
    await other.services.start();
    try {
      const session = await signUp(target);
      const login = (vm: { app: typeof target.app }, password: string) =>
        send(vm, "/api/auth/login", { body: { email: session.email, password } });
      for (let i = 0; i < 9; i++) expect((await login(target, "nope-nope-nope")).status).toBe(401);
      expect((await login(other, "nope-nope-nope")).status).toBe(401);
      // Ten failures within 50 ms: locked on both VMs, the right password too.
      for (const vm of [target, other]) {
        const response = await login(vm, STRONG_PASSWORD);
        expect(response.status).toBe(429);
        expect(((await response.json()) as { detail: string }).detail).toContain("failed sign-ins");
      }
    } finally {
      other.close();
      target.close();
    }
  });

  test("blocks:remove with REDIS_URL forgets the violations in Redis, in one go, exit 0", async () => {
    const target = buildTestApp({ env: { REDIS_URL: redis.url } });
    await target.services.start();
    try {
      const client = { ip: "192.0.2.34", key: "192.0.2.34", address: parseIp("192.0.2.34") };
      let block = null;
      for (let i = 0; i < 10; i++)
        block = await target.services.ipBlocks.recordViolation("login", client);
      expect(block).not.toBeNull();
      const raw = new RedisClient(redis.url);
      const counter = "palisade:rl:violations.login:ip:192.0.2.34";
      expect(await raw.exists(counter)).toBe(true);
      const removed = await cliInProcess(["blocks:remove", String(block!.id)], {
        DATABASE_PATH: target.databasePath,
        REDIS_URL: redis.url,
      });
      expect({ code: removed.code, stderr: removed.stderr }).toEqual({ code: 0, stderr: "" });
      expect(await raw.exists(counter)).toBe(false);
      raw.close();
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
