/**
 * The limiter store's checks per second: one transaction per check (what a naive store does), the
 * store's checks grouped into one transaction per event-loop turn (what the store does), the
 * decision rebuilt with Drizzle's query builder on every check, and the store's statements (read
 * the row, write it back) as Drizzle prepared statements with `sql.placeholder()` (built once),
 * per check and 256 to a transaction, against the raw statements called the same way; and one hot
 * key with 32 checks in flight (each client awaiting its previous answer, as `wrk -c32` does),
 * through the store and through permit leasing (lease.ts) over it, and the 10k-key grouped form
 * through leasing (what many clients pay for the layer). The store's four figures are medians of
 * five interleaved rounds.
 */
import type { Database } from "bun:sqlite";
import { and, eq, sql } from "drizzle-orm";
import type { AppDatabase } from "../src/db/client";
import { rateLimitCounters as t } from "../src/db/schema";
import { LeasingStore } from "../src/plugins/rate-limit/lease";
import type { Policy } from "../src/plugins/rate-limit/policies";
import { BURST_WINDOW_MS } from "../src/plugins/rate-limit/policies";
import { previousWeight, windowStartOf } from "../src/plugins/rate-limit/sliding-window";
import {
  INSERT_ROW,
  READ_ROW,
  SqliteLimiterStore,
  WRITE_ROW,
} from "../src/plugins/rate-limit/sqlite-store";
import type { LimiterStore } from "../src/plugins/rate-limit/store";
import { median } from "./stats";

const policy: Policy = {
  id: "bench",
  limit: 1e9,
  windowMs: 60_000,
  burstLimit: 1e9,
  failClosed: false,
};
const KEYS = 10_000;
/** Interleaved rounds of the store's figures; each is reported as their median. */
const LIMITER_ROUNDS = 5;

function rate(count: number, ms: number) {
  return Math.round(count / (ms / 1000));
}

export async function measureLimiter(db: AppDatabase, checks: number) {
  const store = new SqliteLimiterStore({ sqlite: db.$client });
  const now = Date.now();

  const started = performance.now();
  for (let i = 0; i < checks; i++) store.checkNow([{ policy, key: `a${i % KEYS}`, now }]);
  const autocommit = rate(checks, performance.now() - started);

  // The store's figures are medians of interleaved rounds (one run of each swung ±40 % on this
  // machine), each round on keys of its own: its first 10k checks insert, the rest update.
  const leasing = new LeasingStore(new SqliteLimiterStore({ sqlite: db.$client }));
  const rounds: Record<"grouped" | "leasedManyKeys" | "hotGrouped" | "leased", number[]> = {
    grouped: [],
    leasedManyKeys: [],
    hotGrouped: [],
    leased: [],
  };
  for (let round = 0; round < LIMITER_ROUNDS; round++) {
    let started = performance.now();
    await manyKeys(store, checks, `g${round}-`, now);
    rounds.grouped.push(rate(checks, performance.now() - started));
    started = performance.now();
    await manyKeys(leasing, checks, `l${round}-`, now);
    rounds.leasedManyKeys.push(rate(checks, performance.now() - started));
    rounds.hotGrouped.push(await hotKey(store, checks, `hg${round}`));
    rounds.leased.push(await hotKey(leasing, checks, `hl${round}`));
  }
  const grouped = median(rounds.grouped);
  const leasedManyKeys = median(rounds.leasedManyKeys);
  const hotGrouped = median(rounds.hotGrouped);
  const leased = median(rounds.leased);
  leasing.close();

  const drizzleChecks = Math.min(checks, 20_000);
  const drizzleStarted = performance.now();
  for (let i = 0; i < drizzleChecks; i++) drizzleUpsert(db, `d${i % KEYS}`, now);
  const drizzle = rate(drizzleChecks, performance.now() - drizzleStarted);

  const prepared = comparePrepared(db, checks);
  return { autocommit, grouped, hotGrouped, leased, leasedManyKeys, drizzle, ...prepared };
}

/** 256 checks of distinct keys at a time: the grouped form. */
async function manyKeys(store: LimiterStore, checks: number, prefix: string, now: number) {
  for (let done = 0; done < checks; done += 256) {
    await Promise.all(
      Array.from({ length: 256 }, (_, i) =>
        store.check([{ policy, key: `${prefix}${(done + i) % KEYS}`, now }]),
      ),
    );
  }
}

/** One key, 32 clients each awaiting its answer before the next check; checks/s. */
async function hotKey(store: LimiterStore, checks: number, key: string): Promise<number> {
  const perClient = Math.ceil(checks / 32);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      for (let i = 0; i < perClient; i++) await store.check([{ policy, key, now: Date.now() }]);
    }),
  );
  return rate(perClient * 32, performance.now() - started);
}

/**
 * The store's decision statements (sqlite-store.ts: read the row, write it back by its key,
 * insert a new key) as Drizzle prepared statements with `sql.placeholder()`.
 */
export function prepareDrizzleDecision(db: AppDatabase) {
  const p = (name: string) => sql.placeholder(name);
  // In `set`, a placeholder goes inside sql``: Drizzle types `set` values as SQL, not Placeholder.
  const v = (name: string) => sql`${sql.placeholder(name)}`;
  return {
    readRow: db
      .select({
        windowStart: t.windowStart,
        previous: t.previous,
        current: t.current,
        burstWindowStart: t.burstWindowStart,
        burstPrevious: t.burstPrevious,
        burstCurrent: t.burstCurrent,
      })
      .from(t)
      .where(and(eq(t.policy, p("policy")), eq(t.key, p("key"))))
      .prepare(),
    writeRow: db
      .update(t)
      .set({
        windowStart: v("ws"),
        previous: v("previous"),
        current: v("current"),
        burstWindowStart: v("bws"),
        burstPrevious: v("bprevious"),
        burstCurrent: v("bcurrent"),
        admitted: v("granted"),
        expiresAt: v("expires"),
      })
      .where(and(eq(t.policy, p("policy")), eq(t.key, p("key"))))
      .prepare(),
    insertRow: db
      .insert(t)
      .values({
        policy: p("policy"),
        key: p("key"),
        windowStart: p("ws"),
        current: p("granted"),
        previous: 0,
        burstWindowStart: p("bws"),
        burstCurrent: p("granted"),
        burstPrevious: 0,
        admitted: p("granted"),
        expiresAt: p("expires"),
        pruneAfter: p("expires"),
      })
      .prepare(),
  };
}

/**
 * The store's statements raw and as Drizzle prepared ones, called alike (read the row, write it
 * back counting one more, or insert it): per check, and 256 per transaction.
 */
function comparePrepared(db: AppDatabase, checks: number) {
  const sqlite: Database = db.$client;
  const readRow = sqlite.prepare(READ_ROW);
  const writeRow = sqlite.prepare(WRITE_ROW);
  const insertRow = sqlite.prepare(INSERT_ROW);
  const drizzlePrepared = prepareDrizzleDecision(db);
  const now = Date.now();
  const ws = windowStartOf(now, policy.windowMs);
  const bws = windowStartOf(now, BURST_WINDOW_MS);
  const expires = Math.max(ws + 2 * policy.windowMs, bws + 2 * BURST_WINDOW_MS);
  const viaRaw = (key: string) => {
    const row = readRow.values(policy.id, key)[0] as number[] | undefined;
    if (row === undefined) insertRow.run(policy.id, key, ws, bws, 1, expires);
    else writeRow.run(policy.id, key, ws, 0, row[2]! + 1, bws, 0, row[5]! + 1, 1, expires);
  };
  const viaDrizzle = (key: string) => {
    const row = drizzlePrepared.readRow.get({ policy: policy.id, key });
    if (row === undefined) {
      drizzlePrepared.insertRow.run({ policy: policy.id, key, ws, bws, granted: 1, expires });
    } else {
      drizzlePrepared.writeRow.run({
        policy: policy.id,
        key,
        ws,
        previous: 0,
        current: row.current + 1,
        bws,
        bprevious: 0,
        bcurrent: row.burstCurrent + 1,
        granted: 1,
        expires,
      });
    }
  };
  const perCheck = (run: (key: string) => unknown, prefix: string) => {
    const started = performance.now();
    for (let i = 0; i < checks; i++) run(`${prefix}${i % KEYS}`);
    return rate(checks, performance.now() - started);
  };
  const batched = (run: (key: string) => unknown, prefix: string) => {
    const started = performance.now();
    for (let done = 0; done < checks; done += 256) {
      sqlite
        .transaction(() => {
          for (let i = 0; i < 256; i++) run(`${prefix}${(done + i) % KEYS}`);
        })
        .immediate();
    }
    return rate(checks, performance.now() - started);
  };
  // Interleaved, so both see the same machine; the best of three rounds each.
  const best = { rawAutocommit: 0, drizzleAutocommit: 0, rawBatched: 0, drizzleBatched: 0 };
  for (let round = 0; round < 3; round++) {
    best.rawAutocommit = Math.max(best.rawAutocommit, perCheck(viaRaw, `ra${round}`));
    best.drizzleAutocommit = Math.max(best.drizzleAutocommit, perCheck(viaDrizzle, `da${round}`));
    best.rawBatched = Math.max(best.rawBatched, batched(viaRaw, `rb${round}`));
    best.drizzleBatched = Math.max(best.drizzleBatched, batched(viaDrizzle, `db${round}`));
  }
  return best;
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
      pruneAfter: ws + 2 * policy.windowMs,
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
