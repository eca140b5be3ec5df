/**
 * The rate-limit headers (src/plugins/rate-limit/headers.ts) of admitted and refused requests: the
 * window closest to refusing is the one shown, whichever policy or window it is, and the policy
 * list names every window in order.
 */
import { describe, expect, test } from "bun:test";
import { rateLimitHeaders } from "../../../src/plugins/rate-limit/headers";
import { BURST_WINDOW_MS, type Policy } from "../../../src/plugins/rate-limit/policies";
import type { LimitOutcome } from "../../../src/plugins/rate-limit/store";

const minute = 60_000 * 29_000_000;
const now = minute + 15_000;

const policy = (id: string, limit: number, burstLimit = limit): Policy => ({
  id,
  limit,
  windowMs: 60_000,
  burstLimit,
  failClosed: false,
});

const outcome = (current: number, burstCurrent = current, admitted = true): LimitOutcome => ({
  windowStart: minute,
  previous: 0,
  current,
  burstWindowStart: now - (now % BURST_WINDOW_MS),
  burstPrevious: 0,
  burstCurrent,
  admitted,
});

describe("rate-limit headers", () => {
  test("one policy: its quota, what is left of it, and its window", () => {
    const headers = rateLimitHeaders([policy("default", 100)], [outcome(30)], now, false);
    expect(headers).toEqual({
      "x-ratelimit-limit": "100",
      "x-ratelimit-remaining": "70",
      "x-ratelimit-reset": "105",
      "ratelimit-policy": '"default";q=100;w=60',
      ratelimit: '"default";r=70;t=105',
    });
  });

  test("a burst window tighter than its policy is shown when it is the closer to refusing", () => {
    const p = policy("default", 100, 20);
    const burst = rateLimitHeaders([p], [outcome(30, 15)], now, false);
    expect(burst["x-ratelimit-limit"]).toBe("20");
    expect(burst["x-ratelimit-remaining"]).toBe("5");
    expect(burst.ratelimit).toBe('"default.burst";r=5;t=15');
    expect(burst["ratelimit-policy"]).toBe('"default";q=100;w=60, "default.burst";q=20;w=10');
    // The long window closer: it is the one shown, the burst still listed.
    const long = rateLimitHeaders([p], [outcome(97, 1)], now, false);
    expect(long.ratelimit).toBe('"default";r=3;t=105');
  });

  test("two policies: the closer one is shown; on a tie, the first", () => {
    const policies = [policy("login", 10), policy("default", 100)];
    const second = rateLimitHeaders(policies, [outcome(1), outcome(98)], now, false);
    expect(second["x-ratelimit-limit"]).toBe("100");
    expect(second.ratelimit).toBe('"default";r=2;t=105');
    expect(second["ratelimit-policy"]).toBe('"login";q=10;w=60, "default";q=100;w=60');
    const tie = rateLimitHeaders(policies, [outcome(5), outcome(95)], now, false);
    expect(tie.ratelimit).toBe('"login";r=5;t=105');
  });

  test("an empty window resets at its end; a counted one when it has slid out", () => {
    const headers = rateLimitHeaders([policy("default", 100)], [outcome(0)], now, false);
    expect(headers["x-ratelimit-reset"]).toBe("45");
  });

  test("refused by the first policy: remaining 0, Retry-After, and the policy list so far", () => {
    const policies = [policy("login", 10), policy("default", 100)];
    const headers = rateLimitHeaders(policies, [outcome(10, 10, false)], now, true);
    expect(headers["x-ratelimit-remaining"]).toBe("0");
    expect(headers.ratelimit).toBe('"login";r=0;t=105');
    expect(headers["ratelimit-policy"]).toBe('"login";q=10;w=60');
    expect(Number(headers["retry-after"])).toBeGreaterThan(0);
  });
});
