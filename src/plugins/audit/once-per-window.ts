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
 * request again. Its metric still counts every refusal, and what the bound left out is said in
 * the log itself: `onUnaudited` is told, once a window a kind had any, how many keys' refusals
 * went unaudited (probes 30c F3, 30e F7: a flood filling the bound hid the next refusals, and no
 * row said so).
 */

import { elapsedMs } from "../../clock";
import type { AuditEventType } from "./events";
import type { AuditLog } from "./log";

export type FirstInWindow = (kind: string, key: string, now: number, windowMs: number) => boolean;

/** What the bound left out of one kind's refusals, over `seconds` from the first of them. */
export interface Unaudited {
  kind: string;
  refusals: number;
  seconds: number;
}

/**
 * `firstInWindow` says whether a refusal is the one to audit; `reportPending` reports at once what
 * the bound has left out so far in windows not yet over (at a stop: probe 30f F3, the current
 * window's count was lost when the process stopped within it).
 */
export function oncePerWindow(
  maxKeys: number,
  onUnaudited: (unaudited: Unaudited) => void = () => {},
  now: () => number = Date.now,
): { firstInWindow: FirstInWindow; reportPending(): void } {
  /** Per kind, the refusals left out since the first of them, until they are reported. */
  const leftOut = new Map<string, { refusals: number; since: number; timer: Timer }>();
  const report = (kind: string, seconds: number) => {
    const counted = leftOut.get(kind);
    if (counted === undefined) return;
    leftOut.delete(kind);
    clearTimeout(counted.timer);
    onUnaudited({ kind, refusals: counted.refusals, seconds });
  };
  const leaveOut = (kind: string, windowMs: number) => {
    const known = leftOut.get(kind);
    if (known !== undefined) {
      known.refusals++;
      return;
    }
    // Reported once the window has passed: one row a window, however long the flood.
    const timer = setTimeout(() => report(kind, Math.round(windowMs / 1000)), windowMs);
    timer.unref?.();
    leftOut.set(kind, { refusals: 1, since: now(), timer });
  };
  /** Per kind, the keys audited and until when: one bound per kind, so one flood cannot starve another. */
  const audited = new Map<string, { until: Map<string, number>; sweptAt: number }>();
  const firstInWindow: FirstInWindow = (kind, key, now, windowMs) => {
    let known = audited.get(kind);
    if (known === undefined) {
      known = { until: new Map(), sweptAt: Number.NEGATIVE_INFINITY };
      audited.set(kind, known);
    }
    const { until } = known;
    const expiry = until.get(key);
    // Within its window, unless the clock was stepped back past its start (the window would
    // otherwise last the step too: probe 83f).
    if (expiry !== undefined && expiry > now && expiry - windowMs <= now) return false;
    if (expiry === undefined && until.size >= maxKeys) {
      // Full: forget the keys whose window has passed (at most once a second, so a flood does not
      // sweep per request). Still full, this key goes unaudited until room is made: forgetting
      // live keys instead would let a flood cycling through more keys than the bound be audited
      // once per request again.
      if (elapsedMs(now, known.sweptAt) >= 1000) {
        known.sweptAt = now;
        for (const [remembered, end] of until) {
          if (end <= now || end - windowMs > now) until.delete(remembered);
        }
      }
      if (until.size >= maxKeys) {
        leaveOut(kind, windowMs);
        return false;
      }
    }
    until.set(key, now + windowMs);
    return true;
  };
  return {
    firstInWindow,
    reportPending() {
      for (const [kind, { since }] of [...leftOut]) {
        report(kind, Math.max(1, Math.round((now() - since) / 1000)));
      }
    },
  };
}

/**
 * Refusals of `type` audited once per key and window, and what the bound leaves out recorded as
 * one `audit.refusals_unrecorded` row a window (`{type, kind, refusals, seconds}`).
 */
export function auditedOncePerWindow(
  audit: Pick<AuditLog, "record" | "beforeClose">,
  type: AuditEventType,
  maxKeys = REFUSAL_AUDIT_KEYS,
): FirstInWindow {
  const bound = oncePerWindow(maxKeys, ({ kind, refusals, seconds }) => {
    audit.record({
      type: "audit.refusals_unrecorded",
      outcome: "denied",
      detail: { type, kind, refusals, seconds },
    });
  });
  // A stop within a window records what it has left out so far, over the seconds it counted.
  audit.beforeClose(bound.reportPending);
  return bound.firstInWindow;
}

/**
 * How many addresses' refusals of one kind are audited a minute, per process (probe 30a F2); 1,000
 * let five kinds write ~5 MB a minute of rows kept 90 days from rotating addresses (probe 89b F2).
 */
export const REFUSAL_AUDIT_KEYS = 100;
/** The window a refused address is audited once in. */
export const REFUSAL_AUDIT_WINDOW_MS = 60_000;
