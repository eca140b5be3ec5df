/**
 * @module
 * Refusals that block nobody, audited without a row per request. A flood of them (a rate limit
 * that blocks no one, a request the guard refuses, a CSRF check failed, a webhook signature that
 * does not verify) cost a chained audit row each, kept for the retention (90 days), and a client
 * rotating addresses (a new IPv6 /64 per request) met no per-address bound: probe 30a F2 wrote
 * 5,000 rows a second.
 *
 * Each kind of refusal (an event type, or a policy) is audited once per key (an address, a
 * principal) and window, and at most `maxKeys` keys of a kind are remembered at once: past them a
 * new key is audited only once the window of a remembered one has passed. So a kind writes at most
 * `maxKeys` rows a window, and a flood cycling through more keys than that is not audited per
 * request again. Its metric still counts every refusal.
 */

export type FirstInWindow = (kind: string, key: string, now: number, windowMs: number) => boolean;

export function oncePerWindow(maxKeys: number): FirstInWindow {
  /** Per kind, the keys audited and until when: one bound per kind, so one flood cannot starve another. */
  const audited = new Map<string, { until: Map<string, number>; sweptAt: number }>();
  return function firstInWindow(kind, key, now, windowMs) {
    let known = audited.get(kind);
    if (known === undefined) {
      known = { until: new Map(), sweptAt: Number.NEGATIVE_INFINITY };
      audited.set(kind, known);
    }
    const { until } = known;
    const expiry = until.get(key);
    if (expiry !== undefined && expiry > now) return false;
    if (expiry === undefined && until.size >= maxKeys) {
      // Full: forget the keys whose window has passed (at most once a second, so a flood does not
      // sweep per request). Still full, this key goes unaudited until room is made: forgetting
      // live keys instead would let a flood cycling through more keys than the bound be audited
      // once per request again.
      if (now - known.sweptAt >= 1000) {
        known.sweptAt = now;
        for (const [remembered, end] of until) {
          if (end <= now) until.delete(remembered);
        }
      }
      if (until.size >= maxKeys) return false;
    }
    until.set(key, now + windowMs);
    return true;
  };
}

/** How many addresses' refusals of one kind are audited a minute, per process (probe 30a F2). */
export const REFUSAL_AUDIT_KEYS = 1_000;
/** The window a refused address is audited once in. */
export const REFUSAL_AUDIT_WINDOW_MS = 60_000;
