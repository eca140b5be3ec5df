/**
 * What every LimiterStore promises (src/plugins/rate-limit/store.ts), as one suite run against
 * each store: SQLite in store.test.ts, Redis in redis-store.test.ts. What only one store has (its
 * table, its TTLs, what happens when its server goes away) is tested in that store's file.
 */
import { describe, expect, test } from "bun:test";
import type { Policy } from "../../../src/plugins/rate-limit/policies";
import type { LimiterStore } from "../../../src/plugins/rate-limit/store";
import type { Estimate } from "./stored-estimate";

export interface StorePair {
  /** Two stores on the same backing state: two processes on one file, two VMs on one Redis. */
  stores: [LimiterStore, LimiterStore];
  /** Reads a count from that state, counting nothing. */
  estimate: Estimate;
  close(): void | Promise<void>;
}

export const policy = (limit: number, burstLimit = limit, id = "test"): Policy => ({
  id,
  limit,
  windowMs: 60_000,
  burstLimit,
  failClosed: false,
});

export const minuteStart = () => Math.floor(Date.now() / 60_000) * 60_000;

/** Registers the contract's tests; `open` gives a fresh pair for each test. */
export function limiterStoreContract(name: string, open: () => Promise<StorePair> | StorePair) {
  let run = 0;
  // Unique per test and per run, so tests sharing one Redis server never see each other's counts.
  const unique = (label: string) => `${label}-${++run}-${Bun.randomUUIDv7()}`;

  async function withPair(body: (pair: StorePair) => Promise<void>) {
    const pair = await open();
    try {
      await body(pair);
    } finally {
      await pair.close();
    }
  }

  describe(`${name}: the LimiterStore contract`, () => {
    test("admits exactly the limit of concurrent checks, and counts only the admitted ones", () =>
      withPair(async ({ stores: [store], estimate }) => {
        const key = unique("k");
        const now = minuteStart() + 1_000;
        const outcomes = await Promise.all(
          Array.from({ length: 80 }, () => store.check([{ policy: policy(50), key, now }])),
        );
        expect(outcomes.filter(([o]) => o!.admitted)).toHaveLength(50);
        expect(outcomes.every((o) => o.length === 1)).toBe(true);
        expect(await estimate(policy(50), key, now)).toBe(50);
      }));

    test("two processes (or VMs) on the same state share one limit", () =>
      withPair(async ({ stores: [a, b], estimate }) => {
        const key = unique("shared");
        const now = minuteStart() + 1_000;
        const outcomes = await Promise.all(
          Array.from({ length: 120 }, (_, i) =>
            (i % 2 ? a : b).check([{ policy: policy(30), key, now }]),
          ),
        );
        const admittedBy = [0, 1].map(
          (side) => outcomes.filter((o, i) => i % 2 === side && o[0]!.admitted).length,
        );
        expect(admittedBy[0]! + admittedBy[1]!).toBe(30);
        expect(await estimate(policy(30), key, now)).toBe(30);
        expect(await estimate(policy(30), key, now)).toBe(30);
      }));

    test("keys and policies are counted apart", () =>
      withPair(async ({ stores: [store] }) => {
        const [a, b] = [unique("a"), unique("b")];
        const now = minuteStart() + 1_000;
        const [first] = await store.check([{ policy: policy(1), key: a, now }]);
        const [other] = await store.check([{ policy: policy(1), key: b, now }]);
        const [otherPolicy] = await store.check([{ policy: policy(1, 1, "other"), key: a, now }]);
        const [again] = await store.check([{ policy: policy(1), key: a, now }]);
        expect([first!.admitted, other!.admitted, otherPolicy!.admitted, again!.admitted]).toEqual([
          true,
          true,
          true,
          false,
        ]);
      }));

    test("the previous window slides out", () =>
      withPair(async ({ stores: [store] }) => {
        const key = unique("slide");
        const start = minuteStart();
        for (let i = 0; i < 10; i++) await store.check([{ policy: policy(10), key, now: start }]);
        // 30 s into the next window half of the previous 10 still count: 5 more fit.
        const later = start + 90_000;
        const outcomes = await Promise.all(
          Array.from({ length: 8 }, () => store.check([{ policy: policy(10), key, now: later }])),
        );
        expect(outcomes.filter(([o]) => o!.admitted)).toHaveLength(5);
        // Two windows later nothing of it remains.
        const [fresh] = await store.check([{ policy: policy(10), key, now: start + 180_000 }]);
        expect(fresh).toMatchObject({ admitted: true, previous: 0, current: 1 });
      }));

    test("the burst window caps short spikes below the minute limit", () =>
      withPair(async ({ stores: [store] }) => {
        const key = unique("burst");
        const now = minuteStart() + 1_000;
        const first = await Promise.all(
          Array.from({ length: 5 }, () => store.check([{ policy: policy(10, 3), key, now }])),
        );
        expect(first.filter(([o]) => o!.admitted)).toHaveLength(3);
        const [afterBurst] = await store.check([{ policy: policy(10, 3), key, now: now + 20_000 }]);
        expect(afterBurst!.admitted).toBe(true);
      }));

    test("a refusal by the first policy is not counted by the next", () =>
      withPair(async ({ stores: [store], estimate }) => {
        const key = unique("layered");
        const now = minuteStart() + 1_000;
        const strict = policy(1, 1, "strict");
        const loose = policy(100, 100, "loose");
        const both = [
          { policy: strict, key, now },
          { policy: loose, key, now },
        ];
        expect((await store.check(both)).map((o) => o.admitted)).toEqual([true, true]);
        const second = await store.check(both);
        // Every policy's windows come with a refusal (its Retry-After waits for all of them); the
        // first that has no room refused it.
        expect(second.map((o) => o.admitted)).toEqual([false, true]);
        expect(second[1]!.current).toBe(1);
        expect(await estimate(loose, key, now)).toBe(1);
      }));

    test("concurrent checks for one key are decided together, and refusals cost nothing", () =>
      withPair(async ({ stores: [store] }) => {
        const key = unique("together");
        const now = minuteStart() + 1_000;
        const strict = policy(3, 3, "strict");
        const loose = policy(100, 100, "loose");
        // Both policies, ten requests at once: 3 pass the first, so only 3 are counted by the second.
        const outcomes = await Promise.all(
          Array.from({ length: 10 }, () =>
            store.check([
              { policy: strict, key, now },
              { policy: loose, key, now },
            ]),
          ),
        );
        expect(outcomes.every((o) => o.length === 2)).toBe(true);
        expect(outcomes.filter((o) => o[0]!.admitted && o[1]!.admitted)).toHaveLength(3);
        expect(outcomes.filter((o) => !o[0]!.admitted && o[1]!.admitted)).toHaveLength(7);
        const [looseAfter] = await store.check([{ policy: loose, key, now }]);
        expect(looseAfter!.current).toBe(4);
      }));

    test("a refusal by a later policy is counted by none before it, one at a time or at once (probe 48a F3)", () =>
      withPair(async ({ stores: [store], estimate }) => {
        const now = minuteStart() + 1_000;
        const route = policy(5, 5, "route");
        const shared = policy(2, 2, "shared");
        const checksOf = (key: string) => [
          { policy: route, key, now },
          { policy: shared, key, now },
        ];

        const alone = unique("alone");
        const one = [];
        for (let i = 0; i < 3; i++) one.push(await store.check(checksOf(alone)));
        expect(one.map((o) => o.map((p) => p.admitted))).toEqual([
          [true, true],
          [true, true],
          [true, false],
        ]);
        expect(await estimate(route, alone, now)).toBe(2);
        expect(await estimate(shared, alone, now)).toBe(2);

        // Twenty at once: two admitted, and every refusal is the shared policy's. The route was
        // counted only for the two, so none is told the route is full (three of its five remain).
        const together = unique("together");
        const outcomes = await Promise.all(
          Array.from({ length: 20 }, () => store.check(checksOf(together))),
        );
        const admitted = outcomes.filter((o) => o.every((p) => p.admitted));
        expect(admitted).toHaveLength(2);
        const refused = outcomes.filter((o) => !o.every((p) => p.admitted));
        expect(refused).toHaveLength(18);
        for (const o of refused) {
          expect(o.map((p) => p.admitted)).toEqual([true, false]);
          expect(o[0]!.current).toBe(2);
        }
        expect(await estimate(route, together, now)).toBe(2);
        expect(await estimate(shared, together, now)).toBe(2);
      }));

    // A check can be decided after another process (or a VM whose clock is ahead) counted the key
    // in the next window: it must be decided there, never in its own older window, which sees no
    // counts, grants a fresh limit and moves the key back into the past.
    test("a check stamped in the window before the key's is decided in the key's window", () =>
      withPair(async ({ stores: [ahead, behind], estimate }) => {
        const key = unique("skew");
        const next = minuteStart() + 60_000;
        const full = policy(10, 10);
        for (let i = 0; i < 10; i++) await ahead.check([{ policy: full, key, now: next + 1_000 }]);
        const stale = await Promise.all(
          Array.from({ length: 5 }, () => behind.check([{ policy: full, key, now: next - 50 }])),
        );
        expect(stale.filter(([o]) => o!.admitted)).toHaveLength(0);
        expect(await estimate(full, key, next + 1_000)).toBe(10);
        const [later] = await ahead.check([{ policy: full, key, now: next + 1_000 }]);
        expect(later!.admitted).toBe(false);

        // With room left, it is counted in the key's window, against the counts there.
        const roomy = unique("skew-room");
        const loose = policy(100, 5);
        for (let i = 0; i < 4; i++)
          await ahead.check([{ policy: loose, key: roomy, now: next + 1_000 }]);
        const late = await Promise.all(
          Array.from({ length: 5 }, () =>
            behind.check([{ policy: loose, key: roomy, now: next - 50 }]),
          ),
        );
        expect(late.filter(([o]) => o!.admitted)).toHaveLength(1);
        expect(late.find(([o]) => o!.admitted)![0]).toMatchObject({
          windowStart: next,
          current: 5,
          burstWindowStart: next,
          burstCurrent: 5,
        });
        expect(await estimate(loose, roomy, next + 1_000)).toBe(5);
      }));

    test("a clock seconds behind is decided in the key's window, alternating with the one ahead", () =>
      withPair(async ({ stores: [ahead, behind], estimate }) => {
        const key = unique("seconds");
        const start = minuteStart();
        const ten = policy(10, 10);
        // 40 s apart, across a minute's start: alternating, the two share one limit.
        const outcomes: boolean[] = [];
        for (let i = 0; i < 30; i++) {
          const [outcome] = await (i % 2 ? behind : ahead).check([
            { policy: ten, key, now: start + 60_100 + i * 10 - (i % 2) * 40_000 },
          ]);
          outcomes.push(outcome!.admitted);
        }
        expect(outcomes.filter(Boolean)).toHaveLength(10);
        expect(await estimate(ten, key, start + 60_500)).toBe(10);
      }));

    // Held at such a row's counts, a client at half its limit would be refused until this clock
    // caught up (probe 25b F1); an edited row would hold a key for as long as it is dated ahead.
    test("a stored window two or more ahead (a clock set back, clocks a window apart, an edited row) is started afresh", () =>
      withPair(async ({ stores: [store], estimate }) => {
        const start = minuteStart();
        const one = policy(1, 1);
        for (const ahead of [2 * 60_000, 16 * 60_000]) {
          const key = unique("far");
          const [far] = await store.check([{ policy: one, key, now: start + ahead + 1_000 }]);
          expect(far!.admitted).toBe(true);
          const [now] = await store.check([{ policy: one, key, now: start + 1_000 }]);
          expect(now!.admitted).toBe(true);
          expect(now!.windowStart).toBe(start);
          expect(await estimate(one, key, start + 2_000)).toBe(1);
        }
      }));

    test("only the burst window ahead: the burst count still holds", () =>
      withPair(async ({ stores: [ahead, behind], estimate }) => {
        const key = unique("burst-skew");
        const start = minuteStart();
        const burstFull = policy(100, 5);
        // The same minute; the burst window from 30 s on already holds 5.
        for (let i = 0; i < 5; i++)
          await ahead.check([{ policy: burstFull, key, now: start + 30_100 }]);
        // One burst window behind (50 ms).
        const [stale] = await behind.check([{ policy: burstFull, key, now: start + 29_950 }]);
        expect(stale!.admitted).toBe(false);
        const [later] = await ahead.check([{ policy: burstFull, key, now: start + 30_200 }]);
        expect(later!.admitted).toBe(false);
        expect(await estimate(burstFull, key, start + 30_200)).toBe(5);
      }));

    test("reset forgets one key of one policy, for every process on the state, and nothing else", () =>
      withPair(async ({ stores: [a, b], estimate }) => {
        const key = unique("reset");
        const other = unique("kept");
        const now = minuteStart() + 1_000;
        const full = async (store: LimiterStore, k: string, p = policy(3)) => {
          for (let i = 0; i < 3; i++) await store.check([{ policy: p, key: k, now }]);
          const [refused] = await store.check([{ policy: p, key: k, now }]);
          expect(refused!.admitted).toBe(false);
        };
        await full(a, key);
        await full(a, other);
        await full(a, key, policy(3, 3, "other-policy"));
        await b.reset(policy(3), key);
        expect(await estimate(policy(3), key, now)).toBe(0);
        const [again] = await a.check([{ policy: policy(3), key, now }]);
        expect(again!.admitted).toBe(true);
        expect(again!.current).toBe(1);
        expect(await estimate(policy(3), other, now)).toBe(3);
        expect(await estimate(policy(3, 3, "other-policy"), key, now)).toBe(3);
        // A key never counted resets to what it was: nothing.
        await a.reset(policy(3), unique("never"));
      }));
  });
}
