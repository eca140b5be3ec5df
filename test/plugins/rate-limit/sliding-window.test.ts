import { expect, test } from "bun:test";
import {
  estimate,
  previousWeight,
  remaining,
  resetMs,
  retryAfterMs,
  windowStartOf,
} from "../../../src/plugins/rate-limit/sliding-window";

const W = 60_000;

test("the previous window is weighted by how much of it still overlaps", () => {
  expect(previousWeight(0, W)).toBe(1);
  expect(previousWeight(15_000, W)).toBe(0.75);
  expect(estimate({ previous: 40, current: 10, windowStart: 0 }, 15_000, W)).toBe(40);
  expect(remaining({ previous: 40, current: 10, windowStart: 0 }, 15_000, W, 60)).toBe(20);
  expect(windowStartOf(125_000, W)).toBe(120_000);
});

test("retry-after waits for the previous window to slide out when that is enough", () => {
  // At 30 s: 20 × 0.5 + 10 = 20 = limit. One more needs the estimate at 19: 6 s more of sliding.
  const state = { previous: 20, current: 10, windowStart: 0 };
  expect(retryAfterMs(state, 30_000, W, 20)).toBe(3_000);
  expect(estimate(state, 33_000, W)).toBeCloseTo(19, 6);
});

test("retry-after reaches into the next window when the current one is full", () => {
  const state = { previous: 0, current: 20, windowStart: 0 };
  // In the next window 20 × (1 − x/W) ≤ 19 at x = 3 s; now is 50 s, so 10 s + 3 s.
  expect(retryAfterMs(state, 50_000, W, 20)).toBe(13_000);
  expect(resetMs(state, 50_000, W)).toBe(70_000);
  expect(retryAfterMs({ previous: 0, current: 5, windowStart: 0 }, 50_000, W, 20)).toBe(0);
});

test("a state decided in a window that starts later is read, and waited for, from that start", () => {
  // Decided in the window from 60 s for a check stamped at 59.997 s (another process rolled the
  // row, or another VM's clock is ahead): 1 before and 9 in it, a limit of 10.
  const state = { previous: 1, current: 9, windowStart: 60_000 };
  expect(estimate(state, 59_997, W)).toBe(10);
  expect(remaining(state, 59_997, W, 10)).toBe(0);
  // The earlier failure slides out over the window: refused until it is gone, at its end.
  expect(retryAfterMs(state, 59_997, W, 10)).toBe(3 + W);
  expect(retryAfterMs(state, 60_000, W, 10)).toBe(W);
  // A VM whose clock is 15 s behind waits its 15 s more.
  expect(retryAfterMs({ previous: 20, current: 10, windowStart: 60_000 }, 45_000, W, 20)).toBe(
    15_000 + 33_000,
  );
  expect(resetMs(state, 59_997, W)).toBe(3 + 2 * W);
});
