import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import { generateApiKey } from "../../../src/plugins/auth/api-key-format";
import { parseIp } from "../../../src/plugins/client-ip/address";
import { LeasingStore } from "../../../src/plugins/rate-limit/lease";
import type { Policy } from "../../../src/plugins/rate-limit/policies";
import { RedisLimiterStore } from "../../../src/plugins/rate-limit/redis-store";
import { estimate, retryAfterMs } from "../../../src/plugins/rate-limit/sliding-window";
import type { LimitOutcome } from "../../../src/plugins/rate-limit/store";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, createKey, STRONG_PASSWORD, signUp } from "../../support/auth";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";
import { anotherInstance } from "../../support/instance";
import { auditRows } from "../../support/payments";
import { type RedisServer, redisAvailable, startRedis } from "../../support/redis";
import { waitFor } from "../../support/wait";
import { limiterStoreContract, minuteStart, policy } from "./store-contract";
import { redisEstimate } from "./stored-estimate";

// The contract and most tests move a clock by hand through windows: the checks' own `now` decides.
const CALLER = { time: "caller" } as const;

describe.skipIf(!redisAvailable)("RedisLimiterStore (a real redis-server)", () => {
  let redis: RedisServer;
  // Two clients on one server: what two VMs share.
  limiterStoreContract("RedisLimiterStore", () => {
    const stores = [
      new RedisLimiterStore(new RedisClient(redis.url), CALLER),
      new RedisLimiterStore(new RedisClient(redis.url), CALLER),
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
      () =>
        new LeasingStore(new RedisLimiterStore(new RedisClient(redis.url), CALLER), {
          minLimit: 1,
        }),
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
    const made = new RedisLimiterStore(new RedisClient(redis.url), CALLER);
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

  test("a hash edited to hold counts that are no count (negative, infinite, hex, past 2^53) counts them as 0, as the SQLite store does (probe 54b F2)", async () => {
    const s = store();
    const client = new RedisClient(redis.url);
    const now = minuteStart() + 1_000;
    // Sequentially, so every check is decided alone: exactly the limit of 20 for each edit.
    const admittedOf20Of = async (k: string) => {
      let admitted = 0;
      for (let i = 0; i < 30; i++) {
        const [outcome] = await s.check([{ policy: policy(20), key: k, now }]);
        if (outcome!.admitted) admitted++;
      }
      return admitted;
    };
    try {
      for (const [cur, bcur] of [
        ["-1000", "-1000"],
        ["-inf", "-inf"],
        ["0x10", "-0x10"],
        ["nan", "nan"],
        ["1e300", "1e300"],
        ["9007199254740993", "9007199254740993"],
        ["3.5", "3.5"],
      ]) {
        const k = key();
        await s.check([{ policy: policy(20), key: k, now }]);
        await client.send("HSET", [`palisade:rl:test:${k}`, "cur", cur!, "bcur", bcur!]);
        expect([cur, await admittedOf20Of(k)]).toEqual([cur, 20]);
      }
    } finally {
      client.close();
    }
  });

  test("a key of another type than a hash (written by hand) is replaced by the decision's: limited, never failing (probe 54b F2)", async () => {
    const s = store();
    const client = new RedisClient(redis.url);
    const now = minuteStart() + 1_000;
    try {
      const k = key();
      await client.send("RPUSH", [`palisade:rl:test:${k}`, "x", "y"]);
      const outcomes = [];
      for (let i = 0; i < 8; i++)
        outcomes.push((await s.check([{ policy: policy(5), key: k, now }]))[0]!);
      expect(outcomes.map((o) => o.admitted)).toEqual([
        true,
        true,
        true,
        true,
        true,
        false,
        false,
        false,
      ]);
      expect(await client.send("TYPE", [`palisade:rl:test:${k}`])).toBe("hash");
      // A give-back to a key that is no hash changes nothing and fails nothing.
      const other = key();
      await client.send("SET", [`palisade:rl:test:${other}`, "text"]);
      s.giveBack([
        {
          policy: policy(5),
          key: other,
          windowStart: minuteStart(),
          burstWindowStart: now - (now % 10_000),
          count: 1,
        },
      ]);
      await s.check([{ policy: policy(5), key: key(), now }]);
    } finally {
      client.close();
    }
  });

  describe("on Redis's clock (as the app runs it)", () => {
    const onRedisTime = () => {
      const made = new RedisLimiterStore(new RedisClient(redis.url));
      stores.push(made);
      return made;
    };
    const admitted = async (s: RedisLimiterStore, p: Policy, k: string, n: number, now: number) => {
      const outcomes = await Promise.all(
        Array.from({ length: n }, () => s.check([{ policy: p, key: k, now }])),
      );
      return outcomes.filter(([o]) => o!.admitted).length;
    };

    test("VMs whose clocks are seconds to hours apart share one limit, whichever they ask", async () => {
      const sixty = policy(60, 1000);
      for (const skew of [50, 30_000, 70_000, 14 * 60_000, 5 * 3_600_000]) {
        const [ahead, behind] = [onRedisTime(), onRedisTime()];
        const k = key();
        const now = Date.now();
        let total = 0;
        for (let i = 0; i < 10; i++) {
          total += await admitted(ahead, sixty, k, 4, now + skew);
          total += await admitted(behind, sixty, k, 4, now);
        }
        // 80 asked within a second or so: the limit, never more, never started afresh.
        expect(total).toBe(60);
      }
    });

    test("an outcome's windows are told in the asking VM's time: its headers and Retry-After hold", async () => {
      const five = policy(5, 5);
      for (const skew of [-90_000, 0, 45_000, 3_600_000]) {
        const s = onRedisTime();
        const k = key();
        const now = Date.now() + skew;
        let last: LimitOutcome | undefined;
        for (let i = 0; i < 6; i++) [last] = await s.check([{ policy: five, key: k, now }]);
        expect(last!.admitted).toBe(false);
        // The window started at most a minute before this VM's now, and holds the 5.
        expect(now - last!.windowStart).toBeGreaterThanOrEqual(0);
        expect(now - last!.windowStart).toBeLessThan(61_000);
        expect(estimate(last!, now, 60_000)).toBeCloseTo(5, 2);
        // Refused until the 5 slide out: within the next two minutes, not "now" or hours away.
        const wait = retryAfterMs(last!, now, 60_000, 5);
        expect(wait).toBeGreaterThan(0);
        expect(wait).toBeLessThanOrEqual(120_000);
      }
    });

    /**
     * Spends a limit of two at `now`, asks again at `later` (refused), gives the first permit back
     * and asks once more: admitted only if the give-back found the windows it was counted in.
     */
    const givenBackAndAdmitted = async (now: number, later: number) => {
      const two = policy(2, 2);
      const s = onRedisTime();
      const k = key();
      const [first] = await s.check([{ policy: two, key: k, now }]);
      await s.check([{ policy: two, key: k, now }]);
      const [refused] = await s.check([{ policy: two, key: k, now: later }]);
      expect(refused!.admitted).toBe(false);
      const { windowStart, burstWindowStart } = first!;
      s.giveBack([{ policy: two, key: k, windowStart, burstWindowStart, count: 1 }]);
      const [again] = await s.check([{ policy: two, key: k, now: later }]);
      return again!.admitted;
    };

    test("permits given back by a VM whose clock is off are taken off the window they were counted in", async () => {
      for (const skew of [-70_000, 30_000, 3_600_000]) {
        const now = Date.now() + skew;
        expect(await givenBackAndAdmitted(now, now)).toBe(true);
      }
    });

    test("a give-back after this VM's clock stepped takes the permit off the window it was counted in", async () => {
      // The clock steps 7 s forward: the offset to Redis's clock moves with it.
      const now = Date.now();
      expect(await givenBackAndAdmitted(now, now + 7_000)).toBe(true);
    });

    test("two apps on Redis whose clocks are 130 s apart: a client under its limit is never refused, one over it is", async () => {
      const env = {
        REDIS_URL: redis.url,
        RATE_LIMIT_PER_MINUTE: "60",
        RATE_LIMIT_BURST: "60",
        IP_BLOCK_RATE_LIMIT_REFUSALS: "3",
      };
      const onTime = new ManualClock(0, 1);
      const late = new ManualClock(0, 1);
      late.advance(-130_000);
      const target = buildTestApp({ clock: onTime, env });
      const other = anotherInstance(target, { clock: late, env });
      await target.services.start();
      await other.services.start();
      try {
        // Both answer 127.0.0.1: one client, one key. First through one VM, then the other.
        const statuses: number[] = [];
        for (let i = 0; i < 40; i++) {
          statuses.push((await send(i < 10 ? target : other, "/openapi.json")).status);
        }
        expect(statuses.every((status) => status === 200)).toBe(true);
        for (let i = 0; i < 30; i++) {
          statuses.push((await send(i % 2 ? target : other, "/openapi.json")).status);
        }
        expect(statuses.filter((status) => status === 200)).toHaveLength(60);
        expect(statuses.slice(60).every((status) => status === 429 || status === 403)).toBe(true);
      } finally {
        other.close();
        target.close();
      }
    });
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

  test("a bootstrap API key is one budget on every VM: two VMs on their own files admit the limit once between them, and audit the refusal by each file's key id (probe 35b F1)", async () => {
    const bootstrap = generateApiKey("live");
    const env = {
      REDIS_URL: redis.url,
      API_KEYS: `${bootstrap}:chat`,
      RATE_LIMIT_PER_MINUTE: "10",
      RATE_LIMIT_BURST: "10",
    };
    const first = buildTestApp({ env });
    const second = buildTestApp({ env });
    await first.services.start();
    await second.services.start();
    try {
      const idOn = (vm: TestApp) =>
        (vm.db.$client.query("SELECT id FROM api_keys").get() as { id: string }).id;
      // Each file gives the key a row id of its own: the limits must not follow it.
      expect(idOn(first)).not.toBe(idOn(second));
      const statuses: number[] = [];
      for (let i = 0; i < 16; i++) {
        // A new address each time: only the key's own budget can refuse.
        const vm = i % 2 ? second : first;
        const response = await send(vm, "/api/auth/me", {
          headers: { "x-api-key": bootstrap },
          peer: `198.51.100.${i + 1}`,
        });
        statuses.push(response.status);
      }
      expect(statuses.filter((status) => status === 200)).toHaveLength(10);
      expect(statuses.slice(0, 10).every((status) => status === 200)).toBe(true);
      for (const vm of [first, second]) {
        const refusals = auditRows(vm, "ratelimit.rejected");
        expect(refusals.length).toBeGreaterThan(0);
        for (const row of refusals) expect(row.actor).toBe(`key:${idOn(vm)}`);
      }
      // Three refusals on each VM, five to a lockout: they add up in Redis, and each VM locks the
      // key out under its shared name.
      const lockouts = [first, second].map((vm) =>
        vm.db.$client.query("SELECT address FROM ip_blocks WHERE lifted_at IS NULL").all(),
      );
      expect(lockouts[0]).toEqual(lockouts[1]!);
      expect(lockouts[0]).toEqual([
        { address: expect.stringMatching(/^key:bootstrap-[0-9a-f]{32}$/) },
      ]);
      const locked = await send(first, "/api/auth/me", {
        headers: { "x-api-key": bootstrap },
        peer: "203.0.113.9",
      });
      expect(locked.status).toBe(429);
      expect(((await locked.json()) as { detail: string }).detail).toContain("refused requests");
    } finally {
      second.close();
      first.close();
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

  test("lifting a block with Redis stalled answers within the deadline: the lift is not held for the stall (probe 71c F3)", async () => {
    const own = await startRedis();
    const target = buildTestApp({ env: { REDIS_URL: own.url } });
    await target.services.start();
    try {
      const client = { ip: "192.0.2.35", key: "192.0.2.35", address: parseIp("192.0.2.35") };
      let block = null;
      for (let i = 0; i < 10; i++)
        block = await target.services.ipBlocks.recordViolation("login", client);
      expect(block).not.toBeNull();
      own.pause();
      const started = performance.now();
      // Held until the resume before (25 s in the probe): the stall lasts until `finally` here.
      const lifted = await Promise.race([
        target.services.ipBlocks.lift(client.ip, null),
        Bun.sleep(3_000).then(() => "still waiting"),
      ]);
      expect(lifted).toBe(1);
      expect(performance.now() - started).toBeLessThan(5_000);
      expect(target.services.ipBlocks.blockedUntil(client.ip)).toBeNull();
    } finally {
      own.resume();
      target.close();
      await own.stop();
    }
  });

  test("with Redis stalled on an open connection, answers come within the deadline, and it recovers", async () => {
    const own = await startRedis();
    const target = buildTestApp({ env: { REDIS_URL: own.url } });
    await target.services.start();
    try {
      expect((await send(target, "/openapi.json")).status).toBe(200);
      own.pause();
      // Each answer waits for the 500 ms deadline at most, not for Redis (a stall of minutes).
      const timed = async (path: string, options = {}) => {
        const started = performance.now();
        const response = await send(target, path, options);
        return { status: response.status, ms: performance.now() - started };
      };
      const open = await timed("/openapi.json");
      const login = await timed("/api/auth/login", {
        body: { email: "a@example.test", password: "whatever-it-is" },
      });
      const ready = await timed("/ready");
      expect([open.status, login.status, ready.status]).toEqual([200, 503, 503]);
      for (const answer of [open, login, ready]) expect(answer.ms).toBeLessThan(5_000);
      own.resume();
      await waitFor(async () => (await send(target, "/ready")).status === 200, {
        what: "ready again once Redis answers",
      });
    } finally {
      own.resume();
      target.close();
      await own.stop();
    }
  });

  test("decisions answered 503 while Redis stalled are given back when it runs them late: a client that obeyed Retry-After is not refused after (probe 29d F1); a fail-open route's admitted requests stay counted", async () => {
    const own = await startRedis();
    const target = buildTestApp({ env: { REDIS_URL: own.url, RATE_LIMIT_ALLOW_CIDRS: "" } });
    await target.services.start();
    const raw = new RedisClient(own.url);
    const peer = "198.51.100.71";
    try {
      const { email } = await signUp(target);
      own.pause();
      // Five sign-ins, the policy's whole minute, each answered 503 within the deadline.
      for (let i = 0; i < 5; i++) {
        const refused = await send(target, "/api/auth/login", {
          body: { email, password: STRONG_PASSWORD },
          peer,
        });
        expect(refused.status).toBe(503);
      }
      // A public route is let through (fail-open): it was admitted, and stays counted.
      expect((await send(target, "/openapi.json", { peer })).status).toBe(200);
      own.resume();
      // The public request, queued on the connection after the sign-ins, is counted once Redis
      // runs the queue: by then every sign-in decision has run too, and counted nothing.
      await waitFor(
        async () => Number((await raw.hget(`palisade:rl:default:ip:${peer}`, "cur")) ?? 0) === 1,
        { what: "the queued decisions run" },
      );
      await waitFor(
        async () => Number((await raw.hget(`palisade:rl:login:ip:${peer}`, "cur")) ?? 0) === 0,
        { what: "no sign-in counted" },
      );
      const after = await send(target, "/api/auth/login", {
        body: { email, password: STRONG_PASSWORD },
        peer,
      });
      expect(after.status).toBe(200);
    } finally {
      own.resume();
      raw.close();
      target.close();
      await own.stop();
    }
  });

  test("a sign-in queued behind decisions that timed out in a stall is decided as if they never ran: admitted at the resume, not refused and counted towards a block (probe 29e F1)", async () => {
    const own = await startRedis();
    const target = buildTestApp({ env: { REDIS_URL: own.url, RATE_LIMIT_ALLOW_CIDRS: "" } });
    await target.services.start();
    const raw = new RedisClient(own.url);
    const peer = "198.51.100.72";
    const login = (email: string) =>
      send(target, "/api/auth/login", { body: { email, password: STRONG_PASSWORD }, peer });
    try {
      // A decision made first: this process knows Redis's clock.
      const { email } = await signUp(target);
      own.pause();
      for (let i = 0; i < 5; i++) expect((await login(email)).status).toBe(503);
      // The client's retry, sent during the stall, waits on the connection behind those five.
      const retry = login(email);
      await Bun.sleep(100);
      own.resume();
      expect((await retry).status).toBe(200);
      expect(Number((await raw.hget(`palisade:rl:login:ip:${peer}`, "cur")) ?? 0)).toBe(1);
      expect(await raw.exists(`palisade:rl:violations.ratelimit:ip:${peer}`)).toBe(false);
    } finally {
      own.resume();
      raw.close();
      target.close();
      await own.stop();
    }
  });

  test("a step of this VM's wall clock moves no deadline: back 2 s, sign-ins are decided, not 503; ahead 5 s, a retry queued behind a stall is still admitted (probe 29f F2, F3)", async () => {
    const own = await startRedis();
    let shift = 0;
    const clock = { now: () => Date.now() + shift };
    const target = buildTestApp({
      clock,
      env: { REDIS_URL: own.url, RATE_LIMIT_ALLOW_CIDRS: "" },
    });
    await target.services.start();
    const login = (email: string, peer: string) =>
      send(target, "/api/auth/login", { body: { email, password: STRONG_PASSWORD }, peer });
    try {
      const { email } = await signUp(target);
      shift = -2_000;
      const back = await Promise.all(
        ["198.51.100.81", "198.51.100.82", "198.51.100.83"].map((peer) => login(email, peer)),
      );
      expect(back.map((response) => response.status)).toEqual([200, 200, 200]);
      shift = 5_000;
      own.pause();
      const peer = "198.51.100.84";
      for (let i = 0; i < 5; i++) expect((await login(email, peer)).status).toBe(503);
      const retry = login(email, peer);
      await Bun.sleep(100);
      own.resume();
      expect((await retry).status).toBe(200);
    } finally {
      own.resume();
      target.close();
      await own.stop();
    }
  });

  test("a Redis at its maxmemory that refuses writes is not ready: /ready answers 503 while decisions fail, 200 once it takes writes again (probe 29d F5)", async () => {
    const own = await startRedis();
    const target = buildTestApp({ env: { REDIS_URL: own.url } });
    await target.services.start();
    const raw = new RedisClient(own.url);
    try {
      expect((await send(target, "/ready")).status).toBe(200);
      await raw.send("CONFIG", ["SET", "maxmemory-policy", "noeviction"]);
      await raw.send("CONFIG", ["SET", "maxmemory", "1"]);
      const login = await send(target, "/api/auth/login", {
        body: { email: "a@example.test", password: "whatever-it-is" },
      });
      expect(login.status).toBe(503);
      expect((await send(target, "/ready")).status).toBe(503);
      await raw.send("CONFIG", ["SET", "maxmemory", "0"]);
      expect((await send(target, "/ready")).status).toBe(200);
    } finally {
      raw.close();
      target.close();
      await own.stop();
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
