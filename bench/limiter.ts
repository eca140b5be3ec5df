/**
 * The limiter store's checks per second: one autocommit statement per check (what a naive store
 * does), the same prepared UPSERT grouped into one transaction per event-loop turn (what the store
 * does), and the UPSERT written with Drizzle's query builder, per check in autocommit.
 */
import { sql } from "drizzle-orm";
import type { AppDatabase } from "../src/db/client";
import { rateLimitCounters as t } from "../src/db/schema";
import type { Policy } from "../src/plugins/rate-limit/policies";
import { previousWeight, windowStartOf } from "../src/plugins/rate-limit/sliding-window";
import { SqliteLimiterStore } from "../src/plugins/rate-limit/sqlite-store";

const policy: Policy = {
  id: "bench",
  limit: 1e9,
  windowMs: 60_000,
  burstLimit: 1e9,
  failClosed: false,
};
const KEYS = 10_000;

function rate(count: number, ms: number) {
  return Math.round(count / (ms / 1000));
}

export async function measureLimiter(db: AppDatabase, checks: number) {
  const store = new SqliteLimiterStore({ sqlite: db.$client });
  const now = Date.now();

  let started = performance.now();
  for (let i = 0; i < checks; i++) store.checkNow([{ policy, key: `a${i % KEYS}`, now }]);
  const autocommit = rate(checks, performance.now() - started);

  started = performance.now();
  for (let done = 0; done < checks; done += 256) {
    await Promise.all(
      Array.from({ length: 256 }, (_, i) =>
        store.check([{ policy, key: `g${(done + i) % KEYS}`, now }]),
      ),
    );
  }
  const grouped = rate(checks, performance.now() - started);

  const drizzleChecks = Math.min(checks, 20_000);
  started = performance.now();
  for (let i = 0; i < drizzleChecks; i++) drizzleUpsert(db, `d${i % KEYS}`, now);
  const drizzle = rate(drizzleChecks, performance.now() - started);

  return { autocommit, grouped, drizzle };
}

/** The same decision through Drizzle's builder (long window only: already the slower form). */
function drizzleUpsert(db: AppDatabase, key: string, now: number) {
  const ws = windowStartOf(now, policy.windowMs);
  const weight = previousWeight(now, policy.windowMs);
  const previous = sql`CASE WHEN ${t.windowStart} = ${ws} THEN ${t.previous} WHEN ${t.windowStart} = ${ws - policy.windowMs} THEN ${t.current} ELSE 0 END`;
  const current = sql`CASE WHEN ${t.windowStart} = ${ws} THEN ${t.current} ELSE 0 END`;
  const admit = sql`(${previous} * ${weight} + ${current} + 1 <= ${policy.limit})`;
  return db
    .insert(t)
    .values({
      policy: policy.id,
      key,
      windowStart: ws,
      current: 1,
      previous: 0,
      burstWindowStart: ws,
      burstCurrent: 1,
      burstPrevious: 0,
      admitted: 1,
      expiresAt: ws + 2 * policy.windowMs,
    })
    .onConflictDoUpdate({
      target: [t.policy, t.key],
      set: {
        previous,
        current: sql`${current} + ${admit}`,
        admitted: admit,
        windowStart: ws,
        expiresAt: ws + 2 * policy.windowMs,
      },
    })
    .returning()
    .all();
}

/**
 * The Redis store's grouped checks per second against a real redis-server started here, or null
 * when redis-server is not installed.
 */
export async function measureRedisLimiter(checks: number): Promise<number | null> {
  if (Bun.which("redis-server") === null) return null;
  const { RedisClient } = await import("bun");
  const { RedisLimiterStore } = await import("../src/plugins/rate-limit/redis-store");
  // The tests' helper: a real redis-server on a free loopback port, started and stopped here.
  const { startRedis } = await import("../test/support/redis");
  const server = await startRedis();
  const client = new RedisClient(server.url);
  try {
    const store = new RedisLimiterStore(client);
    const now = Date.now();
    const started = performance.now();
    for (let done = 0; done < checks; done += 256) {
      await Promise.all(
        Array.from({ length: 256 }, (_, i) =>
          store.check([{ policy, key: `r${(done + i) % KEYS}`, now }]),
        ),
      );
    }
    return rate(checks, performance.now() - started);
  } finally {
    client.close();
    await server.stop();
  }
}
