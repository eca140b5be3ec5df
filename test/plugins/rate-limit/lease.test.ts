/**
 * Permit leasing (src/plugins/rate-limit/lease.ts) over the SQLite store: when a lease is taken and
 * how big, what a leased request sees, that unused permits come back in the right window, and
 * that stores sharing one file never admit more than the limit with leases outstanding.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { rateLimitHeaders } from "../../../src/plugins/rate-limit/headers";
import { type LeaseOptions, LeasingStore } from "../../../src/plugins/rate-limit/lease";
import type { Policy } from "../../../src/plugins/rate-limit/policies";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import type { LimitOutcome } from "../../../src/plugins/rate-limit/store";
import { tempDir } from "../../support/app";
import { waitFor } from "../../support/wait";
import { limiterStoreContract, minuteStart, policy } from "./store-contract";
import { sqliteEstimate } from "./stored-estimate";

// The contract with leases allowed for any limit, so its small limits exercise the layer too.
limiterStoreContract("LeasingStore over SQLite", () => {
  const { stores, estimate, close } = openShared(2, { minLimit: 1 });
  return { stores: [stores[0]!, stores[1]!], estimate, close };
});

interface Row {
  window_start: number;
  previous: number;
  current: number;
  burst_current: number;
}

/** `count` leasing stores, each on its own connection to one file: processes of one VM. */
function openShared(count: number, options: LeaseOptions = {}) {
  const dir = tempDir();
  const path = join(dir.path, "limits.db");
  const dbs = Array.from({ length: count }, () => openDatabase(path));
  applyMigrations(dbs[0]!);
  const stores = dbs.map(
    (db) => new LeasingStore(new SqliteLimiterStore({ sqlite: db.$client }), options),
  );
  const reader = openDatabase(path);
  let closed = false;
  return {
    stores,
    estimate: sqliteEstimate(reader.$client),
    row(key: string, policyId = "test"): Row | null {
      return reader.$client
        .query(
          "SELECT window_start, previous, current, burst_current FROM rate_limit_counters WHERE policy = ?1 AND key = ?2",
        )
        .get(policyId, key) as Row | null;
    },
    close() {
      if (closed) return;
      closed = true;
      for (const store of stores) store.close();
      for (const db of dbs) db.$client.close();
      reader.$client.close();
      dir.remove();
    },
  };
}

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanup.reverse()) fn();
  cleanup = [];
});

function shared(count: number, options: LeaseOptions = {}) {
  const opened = openShared(count, options);
  cleanup.push(opened.close);
  return opened;
}

const remainingShown = (p: Policy, outcomes: LimitOutcome[], now: number) =>
  Number(rateLimitHeaders([p], outcomes, now, false)["x-ratelimit-remaining"]);

/** One leasing store over SQLite, its store underneath (to watch or fail), and a key checked twice. */
async function hotKey(options: LeaseOptions = { ttlMs: 5_000 }) {
  const { stores, row } = shared(1, options);
  const leasing = stores[0]!;
  const inner = (leasing as unknown as { store: SqliteLimiterStore }).store;
  const big = policy(1_000);
  const now = minuteStart() + 1_000;
  for (let i = 0; i < 2; i++) await leasing.check([{ policy: big, key: "k", now }]);
  return { leasing, inner, big, now, row };
}

describe("LeasingStore: when a lease is taken", () => {
  test("a key checked again within the lease period leases; a cold key never does", async () => {
    const { stores, row } = shared(1, { ttlMs: 5_000, maxPermits: 32 });
    const [store] = stores;
    const big = policy(1_000);
    const now = minuteStart() + 1_000;
    // Cold: one check every 6 s, longer than a lease period: the row counts exactly the checks.
    for (let i = 0; i < 3; i++) {
      const [o] = await store!.check([{ policy: big, key: "cold", now: now + i * 6_000 }]);
      expect(o!.admitted).toBe(true);
      expect(row("cold")!.current).toBe(i + 1);
    }
    // Hot: the second check is the demand signal, the third takes a lease along with its own
    // permit, as big as the demand seen (3 checks in this lease period).
    for (let i = 0; i < 3; i++) await store!.check([{ policy: big, key: "hot", now: now + i }]);
    expect(row("hot")!.current).toBe(3 + 3);
    // The next 3 are admitted from the lease: the row does not move.
    for (let i = 3; i < 6; i++) await store!.check([{ policy: big, key: "hot", now: now + i }]);
    expect(row("hot")!.current).toBe(6);
    // As demand goes on, leases grow to the cap (32 here; a tenth of what remains is more) and no more.
    let most = 0;
    for (let i = 6; i < 200; i++) {
      await store!.check([{ policy: big, key: "hot", now: now + i }]);
      most = Math.max(most, row("hot")!.current - (i + 1));
    }
    expect(most).toBe(32);
  });

  test("fail-closed policies and limits under 100 never lease, however hot", async () => {
    const { stores, row } = shared(1, { ttlMs: 5_000 });
    const login: Policy = { ...policy(1_000, 1_000, "login"), failClosed: true };
    const small = policy(99, 99, "small");
    const now = minuteStart() + 1_000;
    for (let i = 0; i < 60; i++) {
      await stores[0]!.check([{ policy: login, key: "k", now: now + i }]);
      await stores[0]!.check([{ policy: small, key: "k", now: now + i }]);
      expect(row("k", "login")!.current).toBe(i + 1);
      expect(row("k", "small")!.current).toBe(i + 1);
    }
  });

  test("no lease near the limit: the last stretch is decided by the store, exactly", async () => {
    const { stores, row } = shared(1, { ttlMs: 5_000 });
    const limit = 100;
    const p = policy(limit);
    const now = minuteStart() + 1_000;
    let admitted = 0;
    let outstanding = 0;
    let leasesTaken = 0;
    for (let i = 0; i < 130; i++) {
      const before = admitted;
      const [o] = await stores[0]!.check([{ policy: p, key: "k", now: now + i }]);
      if (o!.admitted) admitted++;
      const nowOutstanding = row("k")!.current - admitted;
      if (nowOutstanding > outstanding) {
        // A lease was taken here: at most a tenth of what remained, and only with 20 or more left.
        leasesTaken++;
        expect(limit - before).toBeGreaterThanOrEqual(20);
        expect(nowOutstanding).toBeLessThanOrEqual(Math.floor((limit - before) / 10));
      }
      outstanding = nowOutstanding;
      // Within the last 10 nothing is held in a lease: each request meets the store.
      if (limit - admitted < 10) expect(outstanding).toBe(0);
    }
    expect(leasesTaken).toBeGreaterThan(1);
    expect(admitted).toBe(limit);
    expect(row("k")!.current).toBe(limit);
  });
});

describe("LeasingStore: what a leased request sees", () => {
  test("remaining counts down one request at a time, across leases", async () => {
    const { stores } = shared(1, { ttlMs: 5_000 });
    const big = policy(1_000);
    const now = minuteStart() + 1_000;
    const shown: number[] = [];
    for (let i = 0; i < 80; i++) {
      const outcomes = await stores[0]!.check([{ policy: big, key: "k", now: now + i }]);
      expect(outcomes[0]!.admitted).toBe(true);
      shown.push(remainingShown(big, outcomes, now + i));
    }
    expect(shown).toEqual(Array.from({ length: 80 }, (_, i) => 1_000 - (i + 1)));
  });

  test("two policies: each one's headers count down, and both rows hold the same lease", async () => {
    const { stores, row } = shared(1, { ttlMs: 5_000 });
    const route = policy(500, 500, "route");
    const fallback = policy(2_000, 2_000, "fallback");
    const now = minuteStart() + 1_000;
    const both = (at: number) => [
      { policy: route, key: "k", now: at },
      { policy: fallback, key: "k", now: at },
    ];
    const shown: string[] = [];
    for (let i = 0; i < 40; i++) {
      const outcomes = await stores[0]!.check(both(now + i));
      expect(outcomes.map((o) => o.admitted)).toEqual([true, true]);
      shown.push(rateLimitHeaders([route, fallback], outcomes, now + i, false).ratelimit!);
    }
    expect(shown).toEqual(Array.from({ length: 40 }, (_, i) => `"route";r=${500 - i - 1};t=119`));
    const route40 = row("k", "route")!.current;
    expect(route40).toBeGreaterThan(40);
    expect(row("k", "fallback")!.current).toBe(route40);
  });
});

describe("LeasingStore: unused permits come back", () => {
  test("a client that stops is charged only for what it used, in both windows", async () => {
    const { stores, row } = shared(1, { ttlMs: 40 });
    const big = policy(1_000);
    const now = minuteStart() + 1_000;
    for (let i = 0; i < 5; i++) await stores[0]!.check([{ policy: big, key: "k", now: now + i }]);
    expect(row("k")!.current).toBeGreaterThan(5);
    await waitFor(() => row("k")!.current === 5, { what: "the lease's unused permits back" });
    expect(row("k")!.burst_current).toBe(5);
  });

  test("close gives outstanding leases back", async () => {
    const opened = openShared(1, { ttlMs: 5_000 });
    cleanup.push(opened.close);
    const big = policy(1_000);
    const now = minuteStart() + 1_000;
    for (let i = 0; i < 3; i++) await opened.stores[0]!.check([{ policy: big, key: "k", now }]);
    expect(opened.row("k")!.current).toBe(6);
    opened.stores[0]!.close();
    expect(opened.row("k")!.current).toBe(3);
  });

  test("a lease ends at its window's end and its unused permits leave that window only", async () => {
    const { stores, row } = shared(1, { ttlMs: 5_000 });
    const big = policy(1_000);
    const w = minuteStart();
    for (let i = 0; i < 3; i++) {
      await stores[0]!.check([{ policy: big, key: "k", now: w + 59_950 + i }]);
    }
    expect(row("k")).toMatchObject({ window_start: w, current: 6 });
    // In the next window the lease is not used: its 3 are uncounted from the window they were
    // counted in, before this check rolls it into `previous`.
    const [next] = await stores[0]!.check([{ policy: big, key: "k", now: w + 60_010 }]);
    expect(next).toMatchObject({ admitted: true, windowStart: w + 60_000, previous: 3 });
    expect(row("k")).toMatchObject({ window_start: w + 60_000, previous: 3 });
  });

  test("given back after another process rolled the window: from previous; two windows on: not at all", async () => {
    const { stores, row } = shared(2, { ttlMs: 5_000 });
    const [a, b] = stores;
    const big = policy(1_000);
    const w = minuteStart();
    for (let i = 0; i < 3; i++) await a!.check([{ policy: big, key: "k", now: w + 59_950 + i }]);
    await b!.check([{ policy: big, key: "k", now: w + 60_010 }]);
    expect(row("k")).toMatchObject({ window_start: w + 60_000, previous: 6, current: 1 });
    // A's next check, two lease periods on (so it takes none): its 3 leave
    // `previous`, where the roll put them.
    await a!.check([{ policy: big, key: "k", now: w + 75_000 }]);
    expect(row("k")).toMatchObject({ window_start: w + 60_000, previous: 3, current: 2 });

    for (let i = 0; i < 3; i++) await a!.check([{ policy: big, key: "old", now: w + 59_950 + i }]);
    await b!.check([{ policy: big, key: "old", now: w + 120_010 }]);
    await a!.check([{ policy: big, key: "old", now: w + 126_000 }]);
    expect(row("old")).toMatchObject({ window_start: w + 120_000, previous: 0, current: 2 });
  });
});

describe("LeasingStore: never more than the limit across stores", () => {
  test("a refusal comes exactly at the limit while another store holds a lease", async () => {
    const { stores, row } = shared(2, { ttlMs: 5_000 });
    const [a, b] = stores;
    const limit = 200;
    const p = policy(limit);
    const now = minuteStart() + 1_000;
    let byA = 0;
    for (let i = 0; i < 3; i++)
      if ((await a!.check([{ policy: p, key: "k", now }]))[0]!.admitted) byA++;
    const held = row("k")!.current - byA;
    expect(held).toBeGreaterThan(0);
    let byB = 0;
    for (let i = 0; i < limit; i++) {
      const [o] = await b!.check([{ policy: p, key: "k", now: now + i }]);
      if (!o!.admitted) break;
      byB++;
    }
    expect(byB).toBe(limit - byA - held);
    const [refused] = await b!.check([{ policy: p, key: "k", now: now + 300 }]);
    expect(refused!.admitted).toBe(false);
    // A's lease is still A's: it admits exactly what it holds, then the store refuses.
    for (let i = 0; i < held; i++) {
      expect((await a!.check([{ policy: p, key: "k", now: now + 1 }]))[0]!.admitted).toBe(true);
    }
    expect((await a!.check([{ policy: p, key: "k", now: now + 2 }]))[0]!.admitted).toBe(false);
    expect(row("k")!.current).toBe(limit);
  });

  test("three stores on one file, hot key: never over the limit, and the whole limit once leases come back", async () => {
    const { stores, row } = shared(3, { ttlMs: 30 });
    const limit = 300;
    const p = policy(limit);
    const start = minuteStart() + 1_000;
    let admitted = 0;
    const round = async (at: number) => {
      const outcomes = await Promise.all(
        stores.map((s) => s.check([{ policy: p, key: "k", now: at }])),
      );
      admitted += outcomes.filter(([o]) => o!.admitted).length;
      expect(admitted).toBeLessThanOrEqual(limit);
      const counted = row("k")!.current;
      expect(counted).toBeLessThanOrEqual(limit);
      held = Math.max(held, counted - admitted);
    };
    let held = 0;
    for (let i = 0; i < 200; i++) await round(start + i);
    // Leases were taken (the row counted permits nobody had used yet).
    expect(held).toBeGreaterThan(0);
    // Leases may still hold permits nobody used; once they expire they are back in the store.
    await waitFor(() => row("k")!.current === admitted, { what: "every lease given back" });
    for (let i = 0; i < 200 && admitted < limit; i++) await round(start + 200 + i);
    expect(admitted).toBe(limit);
    await round(start + 500);
    expect(admitted).toBe(limit);
    expect(row("k")!.current).toBe(limit);
  });
});

describe("LeasingStore: deciding without the store", () => {
  test("checkNow admits from a valid lease, counting down; without one it counts nothing", async () => {
    const { stores, row } = shared(1, { ttlMs: 5_000, maxPermits: 8 });
    const store = stores[0]!;
    const big = policy(1_000);
    const now = minuteStart() + 1_000;
    // No lease yet: nothing decided, nothing counted, and no demand recorded either.
    expect(store.checkNow([{ policy: big, key: "k", now }])).toBeUndefined();
    expect(row("k")).toBeNull();
    for (let i = 0; i < 3; i++) await store.check([{ policy: big, key: "k", now }]);
    const counted = row("k")!.current;
    expect(counted).toBe(3 + 3);
    const shown: number[] = [];
    for (let i = 0; i < 3; i++) {
      const outcomes = store.checkNow([{ policy: big, key: "k", now }]);
      expect(outcomes?.[0]?.admitted).toBe(true);
      shown.push(remainingShown(big, outcomes!, now));
    }
    expect(shown).toEqual([996, 995, 994]);
    // Used up: the store decides again, and the row has not moved meanwhile.
    expect(store.checkNow([{ policy: big, key: "k", now }])).toBeUndefined();
    expect(row("k")!.current).toBe(counted);
    // Another key, or the same key past its lease, is never admitted here.
    expect(store.checkNow([{ policy: big, key: "other", now }])).toBeUndefined();
    await store.check([{ policy: big, key: "k", now }]);
    expect(store.checkNow([{ policy: big, key: "k", now: now + 60_000 }])).toBeUndefined();
  });

  test("checks arriving while a lease is taken wait for it: a burst costs the store one decision", async () => {
    const { leasing, inner, big, now, row } = await hotKey({ ttlMs: 5_000, maxPermits: 64 });
    for (let i = 2; i < 40; i++) await leasing.check([{ policy: big, key: "k", now }]);
    // Between leases: the next check takes one, and the 19 arriving with it wait for it.
    while (row("k")!.current > 40 && leasing.checkNow([{ policy: big, key: "k", now }])) {}
    const before = row("k")!.current;
    let decisions = 0;
    for (const name of ["check", "checkAndLease"] as const) {
      const real = inner[name].bind(inner) as (...args: unknown[]) => unknown;
      (inner as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
        decisions++;
        return real(...args);
      };
    }
    const burst = await Promise.all(
      Array.from({ length: 20 }, () => leasing.check([{ policy: big, key: "k", now }])),
    );
    expect(burst.every(([o]) => o!.admitted)).toBe(true);
    expect(decisions).toBe(1);
    // Each saw its own count, one after the other.
    const shown = burst.map((outcomes) => remainingShown(big, outcomes, now));
    expect(new Set(shown).size).toBe(20);
    expect(Math.max(...shown) - Math.min(...shown)).toBe(19);
    // The one decision counted the first check and a lease the other 19 took permits of.
    const taken = row("k")!.current - before;
    expect(taken).toBeGreaterThanOrEqual(20);
    expect(taken).toBeLessThanOrEqual(1 + 64);
  });

  test("a lease the store fails to decide fails the checks that waited for it, at once", async () => {
    const { leasing, inner, big, now, row } = await hotKey();
    const real = inner.checkAndLease.bind(inner);
    let leaseAsks = 0;
    let checks = 0;
    inner.checkAndLease = (...args) => {
      leaseAsks++;
      return leaseAsks === 1 ? Promise.reject(new Error("database is locked")) : real(...args);
    };
    const realCheck = inner.check.bind(inner);
    inner.check = (...args) => {
      checks++;
      return realCheck(...args);
    };
    const settled = await Promise.allSettled(
      Array.from({ length: 10 }, () => leasing.check([{ policy: big, key: "k", now }])),
    );
    // Each fails with the decision it waited for (the enforcer then fails open or closed by
    // policy), instead of meeting the locked store once more on its own.
    expect(settled.map((s) => (s.status === "rejected" ? String(s.reason) : "admitted"))).toEqual(
      Array.from({ length: 10 }, () => "Error: database is locked"),
    );
    expect([leaseAsks, checks]).toEqual([1, 0]);
    expect(row("k")!.current).toBe(2);
    // The next check takes a lease as before.
    const [next] = await leasing.check([{ policy: big, key: "k", now }]);
    expect(next!.admitted).toBe(true);
    expect(leaseAsks).toBe(2);
  });
});

describe("LeasingStore: failures and bounds", () => {
  test("a store failure while a lease is taken fails that check (open or closed by policy), and leasing goes on", async () => {
    const { leasing, inner, big, now, row } = await hotKey();
    const real = inner.checkAndLease.bind(inner);
    inner.checkAndLease = () => Promise.reject(new Error("disk I/O error"));
    await expect(leasing.check([{ policy: big, key: "k", now }])).rejects.toThrow("disk I/O error");
    inner.checkAndLease = real;
    expect(row("k")!.current).toBe(2);
    const [next] = await leasing.check([{ policy: big, key: "k", now }]);
    expect(next!.admitted).toBe(true);
    expect(row("k")!.current).toBeGreaterThan(3);
  });

  test("a flood of new keys is not tracked without bound, and does not drop a lease in use", async () => {
    const { stores, row } = shared(1, { ttlMs: 5_000, maxTracked: 4 });
    const big = policy(1_000);
    const now = minuteStart() + 1_000;
    for (let i = 0; i < 3; i++) await stores[0]!.check([{ policy: big, key: "hot", now }]);
    const leased = row("hot")!.current;
    expect(leased).toBe(6);
    for (let i = 0; i < 20; i++) await stores[0]!.check([{ policy: big, key: `new-${i}`, now }]);
    // The hot key's lease is still this process's: its next 3 come from it, the row unchanged.
    for (let i = 0; i < 3; i++) await stores[0]!.check([{ policy: big, key: "hot", now }]);
    expect(row("hot")!.current).toBe(leased);
    const tracked = (stores[0] as unknown as { demand: Map<string, unknown> }).demand;
    expect(tracked.size).toBeLessThanOrEqual(4);
  });
});
