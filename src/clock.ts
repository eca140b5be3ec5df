/** Time as a dependency, so tests can move it instead of waiting. Milliseconds since the epoch. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A day of a Clock's milliseconds: retention periods, daily budgets and quotas are counted in them. */
export const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Milliseconds from `then` to `now`, both read from a Clock, for what one process keeps timed with
 * it (a cache, a poll, a window, an open circuit). A wall clock stepped back (NTP, a VM resumed)
 * made that negative, and a check waiting for it to pass a bound waited the whole step: revoked
 * keys and ended sessions accepted, blocks not applied nor lifted, the chat circuit open, for as
 * long as the step (probe 83f F1–F3). A step back reads as long past: what waits runs now.
 */
export function elapsedMs(now: number, then: number): number {
  return now >= then ? now - then : Number.POSITIVE_INFINITY;
}
