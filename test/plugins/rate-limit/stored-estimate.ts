/**
 * What a key has counted, read from a store's backing state without counting anything: how the
 * tests look at a count (the service itself only ever decides, through `check`).
 */
import type { Database } from "bun:sqlite";
import type { RedisClient } from "bun";
import type { Policy } from "../../../src/plugins/rate-limit/policies";
import { rollForward } from "../../../src/plugins/rate-limit/sliding-window";

/** The estimated count of (policy, key)'s long window at `now`. */
export type Estimate = (policy: Policy, key: string, now: number) => Promise<number>;

function estimateOf(
  stored: { windowStart: unknown; previous: unknown; current: unknown } | null,
  now: number,
  windowMs: number,
): number {
  if (stored === null) return 0;
  const { previous, current, weight } = rollForward(
    now,
    windowMs,
    stored.windowStart,
    stored.previous,
    stored.current,
  );
  return previous * weight + current;
}

export function sqliteEstimate(sqlite: Database): Estimate {
  const read = sqlite.query<
    { windowStart: number; previous: number; current: number },
    [string, string]
  >(
    "SELECT window_start AS windowStart, previous, current FROM rate_limit_counters WHERE policy = ? AND key = ?",
  );
  return async (policy, key, now) => estimateOf(read.get(policy.id, key), now, policy.windowMs);
}

export function redisEstimate(client: RedisClient): Estimate {
  return async (policy, key, now) => {
    const [ws, cur, prev] = (await client.hmget(`palisade:rl:${policy.id}:${key}`, [
      "ws",
      "cur",
      "prev",
    ])) as (string | null)[];
    const stored =
      ws === null || ws === undefined
        ? null
        : { windowStart: Number(ws), previous: Number(prev), current: Number(cur) };
    return estimateOf(stored, now, policy.windowMs);
  };
}
