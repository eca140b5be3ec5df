/**
 * The SQLite store's UPSERT decides in SQL what sliding-window.ts says in TypeScript, and takes a
 * shortcut (all permits granted when the plain sums leave room) before the weighted estimate.
 * Here both are compared over many stored states — current, one window old, older; near, at and
 * past both limits; several permits wanted at once — so the shortcut can never grant a permit the
 * estimate would refuse, nor refuse one it would grant.
 */
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { BURST_WINDOW_MS } from "../../../src/plugins/rate-limit/policies";
import { estimate, windowStartOf } from "../../../src/plugins/rate-limit/sliding-window";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import { tempDir } from "../../support/app";
import { minuteStart, policy } from "./store-contract";

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanup.reverse()) fn();
  cleanup = [];
});

/** A small seeded generator, so a failure names a case that can be run again. */
function random(seed: number) {
  let state = seed >>> 0;
  return (below: number) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % below;
  };
}

/** The stored window rolled forward to `now`, as the UPSERT's CASE expressions do. */
function rolled(
  stored: { start: number; previous: number; current: number },
  now: number,
  w: number,
) {
  const start = windowStartOf(now, w);
  if (stored.start === start)
    return { windowStart: start, previous: stored.previous, current: stored.current };
  if (stored.start === start - w)
    return { windowStart: start, previous: stored.current, current: 0 };
  return { windowStart: start, previous: 0, current: 0 };
}

test("the store grants exactly what the sliding-window estimate leaves, for every kind of stored state", async () => {
  const dir = tempDir();
  const db = openDatabase(join(dir.path, "limits.db"));
  applyMigrations(db);
  const store = new SqliteLimiterStore({ sqlite: db.$client });
  cleanup.push(() => {
    store.close();
    db.$client.close();
    dir.remove();
  });
  const insert = db.$client.prepare(
    `INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
      burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
     VALUES ('test', ?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8)`,
  );
  const pick = random(20260601);
  const base = minuteStart();
  let granted = 0;
  let refused = 0;
  for (let i = 0; i < 1_000; i++) {
    const key = `case-${i}`;
    const wanted = 1 + pick(8);
    const limit = 1 + pick(40);
    // Half the cases leave the burst limit out of reach, so the long one alone decides.
    const burstLimit = pick(2) === 0 ? 1 + pick(40) : 1_000;
    // Often at a window's very start, where the previous window weighs (almost) fully.
    const now = base + (pick(2) === 0 ? pick(60_000) : pick(3));
    const w = 60_000;
    // Two thirds of the counts put previous + current + wanted right at the limit (±1).
    const counts = (max: number) => {
      const previous = pick(Math.min(max, 60) + 5);
      const current =
        pick(3) === 0
          ? pick(Math.min(max, 60) + 5)
          : Math.max(0, max - wanted - previous - 1 + pick(3));
      return { previous, current };
    };
    const long = { start: windowStartOf(now, w) - pick(3) * w, ...counts(limit) };
    const burst = {
      start: windowStartOf(now, BURST_WINDOW_MS) - pick(3) * BURST_WINDOW_MS,
      ...counts(burstLimit),
    };
    insert.run(
      key,
      long.start,
      long.current,
      long.previous,
      burst.start,
      burst.current,
      burst.previous,
      now + 120_000,
    );

    const outcomes = await Promise.all(
      Array.from({ length: wanted }, () =>
        store.check([{ policy: policy(limit, burstLimit), key, now }]),
      ),
    );

    const l = rolled(long, now, w);
    const b = rolled(burst, now, BURST_WINDOW_MS);
    const expected = Math.max(
      0,
      Math.min(
        wanted,
        Math.floor(limit - estimate(l, now, w)),
        Math.floor(burstLimit - estimate(b, now, BURST_WINDOW_MS)),
      ),
    );
    const admitted = outcomes.filter(([o]) => o!.admitted).length;
    const row = db.$client
      .query<{ current: number; burst_current: number }, [string]>(
        "SELECT current, burst_current FROM rate_limit_counters WHERE key = ?1",
      )
      .get(key)!;
    // A decision that grants nothing writes nothing: the row stays as it was stored.
    expect({ i, admitted, current: row.current, burstCurrent: row.burst_current }).toEqual({
      i,
      admitted: expected,
      current: expected > 0 ? l.current + expected : long.current,
      burstCurrent: expected > 0 ? b.current + expected : burst.current,
    });
    if (expected === wanted) granted++;
    else refused++;
  }
  // The cases reach both sides: wholly granted, and cut short by a limit.
  expect(granted).toBeGreaterThan(50);
  expect(refused).toBeGreaterThan(50);
});
