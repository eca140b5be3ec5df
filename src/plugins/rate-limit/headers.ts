/**
 * @module
 * Rate-limit response headers: the de-facto `X-RateLimit-*` trio and the IETF httpapi fields
 * (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` lists each policy's quota and window,
 * `RateLimit` the remaining quota and seconds to reset of the one closest to refusing).
 */
import { BURST_WINDOW_MS, type Policy } from "./policies";
import { remaining, resetMs, retryAfterMs, type WindowState } from "./sliding-window";
import type { LimitOutcome } from "./store";

export interface Standing {
  /** `policy` or `policy.burst` */
  name: string;
  limit: number;
  windowMs: number;
  remaining: number;
  resetSeconds: number;
  retryAfterMs: number;
}

function longWindow(o: LimitOutcome): WindowState {
  return { previous: o.previous, current: o.current, windowStart: o.windowStart };
}

function burstWindow(o: LimitOutcome): WindowState {
  return { previous: o.burstPrevious, current: o.burstCurrent, windowStart: o.burstWindowStart };
}

/** Both windows of one outcome, as the client should see them. */
export function standingsOf(policy: Policy, outcome: LimitOutcome, now: number): Standing[] {
  const windows: [string, number, number, WindowState][] = [
    [policy.id, policy.limit, policy.windowMs, longWindow(outcome)],
  ];
  if (policy.burstLimit < policy.limit) {
    windows.push([`${policy.id}.burst`, policy.burstLimit, BURST_WINDOW_MS, burstWindow(outcome)]);
  }
  return windows.map(([name, limit, windowMs, state]) => ({
    name,
    limit,
    windowMs,
    remaining: remaining(state, now, windowMs, limit),
    resetSeconds: Math.max(1, Math.ceil(resetMs(state, now, windowMs) / 1000)),
    retryAfterMs: retryAfterMs(state, now, windowMs, limit),
  }));
}

/** The standing closest to refusing: the fewest remaining, then the longest wait. */
export function tightest(standings: readonly Standing[]): Standing {
  let best = standings[0]!;
  for (const s of standings) {
    if (
      s.remaining < best.remaining ||
      (s.remaining === best.remaining && s.retryAfterMs > best.retryAfterMs)
    ) {
      best = s;
    }
  }
  return best;
}

export function rateLimitHeaders(
  standings: readonly Standing[],
  refused: boolean,
): Record<string, string> {
  const closest = tightest(standings);
  const headers: Record<string, string> = {
    "x-ratelimit-limit": String(closest.limit),
    "x-ratelimit-remaining": String(refused ? 0 : closest.remaining),
    "x-ratelimit-reset": String(closest.resetSeconds),
    "ratelimit-policy": standings
      .map((s) => `"${s.name}";q=${s.limit};w=${s.windowMs / 1000}`)
      .join(", "),
    ratelimit: `"${closest.name}";r=${refused ? 0 : closest.remaining};t=${closest.resetSeconds}`,
  };
  if (refused) {
    const wait = Math.max(...standings.map((s) => s.retryAfterMs));
    headers["retry-after"] = String(Math.max(1, Math.ceil(wait / 1000)));
  }
  return headers;
}
