/**
 * @module
 * Rate-limit response headers: the de-facto `X-RateLimit-*` trio and the IETF httpapi fields
 * (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` lists each policy's quota and window,
 * `RateLimit` the remaining quota and seconds to reset of the one closest to refusing).
 *
 * This runs on every limited response, so the policy list is rendered once per policy set and the
 * wait before a retry is worked out only for refusals.
 */
import { BURST_WINDOW_MS, type Policy } from "./policies";
import { remaining, resetMs, retryAfterMs, type WindowState } from "./sliding-window";
import type { LimitOutcome } from "./store";

interface Window {
  name: string;
  limit: number;
  windowMs: number;
  state: WindowState;
}

function windowsOf(policy: Policy, outcome: LimitOutcome, into: Window[]): void {
  into.push({
    name: policy.id,
    limit: policy.limit,
    windowMs: policy.windowMs,
    state: {
      previous: outcome.previous,
      current: outcome.current,
      windowStart: outcome.windowStart,
    },
  });
  // The burst window is shown only where it is tighter than the policy itself.
  if (policy.burstLimit < policy.limit) {
    into.push({
      name: `${policy.id}.burst`,
      limit: policy.burstLimit,
      windowMs: BURST_WINDOW_MS,
      state: {
        previous: outcome.burstPrevious,
        current: outcome.burstCurrent,
        windowStart: outcome.burstWindowStart,
      },
    });
  }
}

/**
 * The two headers whose values repeat from one admitted answer of a route to the next: the policy
 * list, and the limit of the window closest to refusing (the same window until another gets
 * closer). The response builder keeps them prebuilt (security-headers/response.ts).
 */
export const STEADY_RATE_LIMIT_HEADERS = ["ratelimit-policy", "x-ratelimit-limit"] as const;

const policyHeaderCache = new WeakMap<readonly Policy[], string>();

function renderPolicies(windows: readonly Window[]): string {
  return windows.map((w) => `"${w.name}";q=${w.limit};w=${w.windowMs / 1000}`).join(", ");
}

/** The `RateLimit-Policy` of a full list of outcomes, rendered once per `policies` array. */
function policyHeader(policies: readonly Policy[], outcomes: readonly LimitOutcome[]): string {
  let header = policyHeaderCache.get(policies);
  if (header === undefined) {
    const windows: Window[] = [];
    for (let i = 0; i < outcomes.length; i++) windowsOf(policies[i]!, outcomes[i]!, windows);
    header = renderPolicies(windows);
    policyHeaderCache.set(policies, header);
  }
  return header;
}

/**
 * The headers for the outcomes of `policies` (in order; a refused check ends the list). Pass the
 * same `policies` array for the same route each time: its rendering is cached on it.
 */
export function rateLimitHeaders(
  policies: readonly Policy[],
  outcomes: readonly LimitOutcome[],
  now: number,
  refused: boolean,
): Record<string, string> {
  return refused
    ? refusalHeaders(policies, outcomes, now)
    : admittedHeaders(policies, outcomes, now);
}

/** The window closest to refusing (the first of equals), and what is left of it. */
interface Closest {
  name: string;
  limit: number;
  left: number;
  state: WindowState;
  windowMs: number;
}

/**
 * The window closest to refusing among the outcomes' windows (each policy's, then its burst where
 * that is tighter), found without building a list of windows: it runs on every limited response.
 */
function closestWindow(
  policies: readonly Policy[],
  outcomes: readonly LimitOutcome[],
  now: number,
): Closest {
  let name = "";
  let limit = 0;
  let left = Number.POSITIVE_INFINITY;
  let state: WindowState = outcomes[0]!;
  let windowMs = 0;
  for (let i = 0; i < outcomes.length; i++) {
    const policy = policies[i]!;
    const outcome = outcomes[i]!;
    const longLeft = remaining(outcome, now, policy.windowMs, policy.limit);
    if (longLeft < left) {
      name = policy.id;
      limit = policy.limit;
      left = longLeft;
      state = outcome;
      windowMs = policy.windowMs;
    }
    // The burst window counts only where it is tighter than the policy itself.
    if (policy.burstLimit < policy.limit) {
      const burst = burstState(outcome);
      const burstLeft = remaining(burst, now, BURST_WINDOW_MS, policy.burstLimit);
      if (burstLeft < left) {
        name = `${policy.id}.burst`;
        limit = policy.burstLimit;
        left = burstLeft;
        state = burst;
        windowMs = BURST_WINDOW_MS;
      }
    }
  }
  return { name, limit, left, state, windowMs };
}

/** An admitted request's headers (every response of a limited route). */
function admittedHeaders(
  policies: readonly Policy[],
  outcomes: readonly LimitOutcome[],
  now: number,
): Record<string, string> {
  const { name, limit, left, state, windowMs } = closestWindow(policies, outcomes, now);
  const reset = Math.max(1, Math.ceil(resetMs(state, now, windowMs) / 1000));
  return {
    "x-ratelimit-limit": String(limit),
    "x-ratelimit-remaining": String(left),
    "x-ratelimit-reset": String(reset),
    "ratelimit-policy": policyHeader(policies, outcomes),
    ratelimit: `"${name}";r=${left};t=${reset}`,
  };
}

function burstState(outcome: LimitOutcome): WindowState {
  return {
    previous: outcome.burstPrevious,
    current: outcome.burstCurrent,
    windowStart: outcome.burstWindowStart,
  };
}

/** A refused request's headers: remaining 0, and the wait until every window admits again. */
function refusalHeaders(
  policies: readonly Policy[],
  outcomes: readonly LimitOutcome[],
  now: number,
): Record<string, string> {
  const { name, limit, state, windowMs } = closestWindow(policies, outcomes, now);
  const reset = Math.max(1, Math.ceil(resetMs(state, now, windowMs) / 1000));
  const windows: Window[] = [];
  for (let i = 0; i < outcomes.length; i++) windowsOf(policies[i]!, outcomes[i]!, windows);
  return {
    "x-ratelimit-limit": String(limit),
    "x-ratelimit-remaining": "0",
    "x-ratelimit-reset": String(reset),
    "ratelimit-policy":
      outcomes.length === policies.length
        ? policyHeader(policies, outcomes)
        : renderPolicies(windows),
    ratelimit: `"${name}";r=0;t=${reset}`,
    "retry-after": String(retryAfterSeconds(windows, now)),
  };
}

/** Whole seconds (at least 1) until every window of a refused decision admits again. */
function retryAfterSeconds(windows: readonly Window[], now: number): number {
  let wait = 0;
  for (const w of windows) wait = Math.max(wait, retryAfterMs(w.state, now, w.windowMs, w.limit));
  return Math.max(1, Math.ceil(wait / 1000));
}

/** `Retry-After` of one refused check, for a refusal answered outside the rate-limit stage. */
export function refusedForSeconds(policy: Policy, outcome: LimitOutcome, now: number): number {
  const windows: Window[] = [];
  windowsOf(policy, outcome, windows);
  return retryAfterSeconds(windows, now);
}
