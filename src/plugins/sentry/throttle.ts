/**
 * @module
 * One event per failure per minute. While a dependency is down (the database locked past its
 * timeout, an upstream refusing), every request fails the same way: one Sentry event each would
 * spend the project's quota in minutes and bury the next, different failure.
 *
 * A failure is its fingerprint: status, code, route, upstream, and for the error and each cause
 * under it (an AppError keeps what caused it) the type, first message line and the frame it was
 * thrown from — so a lock and a missing table behind the same 503 are two failures. Its first
 * occurrence is sent; its repeats within the interval are counted, and the count is sent with the
 * failure's next event: its next occurrence after the interval, or, when none comes, the last
 * repeat itself once the interval ends (or at shutdown), so no counted repeat goes unreported.
 * Logs and metrics still see every one.
 */
import { firstLine } from "../../error-line";
import type { ErrorContext } from "./index";

export const REPORT_INTERVAL_MS = 60_000;
/** How soon a failure whose event was lost is sent again (with what it stood for). */
export const LOST_RETRY_MS = 10_000;
/** Distinct failures tracked at once; past it (all still within their interval) new ones are sent. */
const MAX_FINGERPRINTS = 1_000;
/** How deep a cause chain is read for the fingerprint. */
const MAX_CAUSES = 4;

/** What was counted and not sent: how many repeats, over what time, and the last of them. */
export interface PendingRepeats {
  error: unknown;
  context: ErrorContext;
  repeats: number;
  firstAt: number;
  lastAt: number;
}

interface Failure {
  /** When this failure's interval ends. */
  until: number;
  pending: PendingRepeats | null;
  /** Its events lost in a row since one was delivered: each waits twice as long, up to the interval. */
  losses: number;
}

export interface ReportThrottle {
  /**
   * Whether to send this occurrence: null when it is a repeat within the interval (counted), else
   * what was counted since the last one sent (null when nothing was).
   */
  admit(
    fingerprint: string,
    now: number,
    error: unknown,
    context: ErrorContext,
  ): { repeats: PendingRepeats | null } | null;
  /**
   * An event this throttle admitted was not delivered (refused, unanswered, dropped unsent): what
   * it stood for — its own occurrence and the repeats it carried — is counted again as repeats, and
   * sent by `drain` within `LOST_RETRY_MS`, so a failure whose first event was lost is not taken
   * as reported for the rest of its interval (probe 89a F1). Each further loss in a row waits twice
   * as long, up to the interval: while Sentry is down a failure is tried once a minute, as when it
   * is up, not every 10 s (probe 89d F6).
   */
  lost(fingerprint: string, now: number, lostEvent: PendingRepeats): void;
  /** An event of this failure was delivered: the next loss waits `LOST_RETRY_MS` again. */
  delivered(fingerprint: string): void;
  /** The counted repeats of failures whose interval has ended (all of them with `all`). */
  drain(now: number, all?: boolean): PendingRepeats[];
  /** When the earliest interval with counted repeats ends, or null when none has any. */
  nextDrainAt(): number | null;
}

export function createReportThrottle(
  intervalMs = REPORT_INTERVAL_MS,
  maxFingerprints = MAX_FINGERPRINTS,
): ReportThrottle {
  const failures = new Map<string, Failure>();
  let sweptAt = Number.NEGATIVE_INFINITY;
  return {
    admit(fingerprint, now, error, context) {
      const known = failures.get(fingerprint);
      // Within the interval; a clock set back past its start begins a new one rather than
      // suppressing the failure until the clock catches up.
      if (known !== undefined && now < known.until && now >= known.until - intervalMs) {
        const pending = known.pending;
        if (pending === null)
          known.pending = { error, context, repeats: 1, firstAt: now, lastAt: now };
        else Object.assign(pending, { error, context, repeats: pending.repeats + 1, lastAt: now });
        return null;
      }
      if (known === undefined && failures.size >= maxFingerprints && now - sweptAt >= 1000) {
        sweptAt = now;
        for (const [key, entry] of failures) {
          if (entry.until <= now && entry.pending === null) failures.delete(key);
        }
      }
      const repeats = known?.pending ?? null;
      // Still full: sent untracked, rather than a new failure going unreported.
      if (known !== undefined || failures.size < maxFingerprints) {
        failures.set(fingerprint, {
          until: now + intervalMs,
          pending: null,
          losses: known?.losses ?? 0,
        });
      }
      return { repeats };
    },
    lost(fingerprint, now, lostEvent) {
      let failure = failures.get(fingerprint);
      if (failure === undefined) {
        if (failures.size >= maxFingerprints) return;
        failure = { until: now + intervalMs, pending: null, losses: 0 };
        failures.set(fingerprint, failure);
      }
      failure.losses++;
      const wait = Math.min(LOST_RETRY_MS * 2 ** (failure.losses - 1), intervalMs);
      const pending = failure.pending;
      if (pending === null) failure.pending = { ...lostEvent };
      else {
        // The repeats counted since are newer: their last error and context stay the event's.
        pending.repeats += lostEvent.repeats;
        pending.firstAt = Math.min(pending.firstAt, lostEvent.firstAt);
      }
      failure.until = Math.min(failure.until, now + wait);
    },
    delivered(fingerprint) {
      const failure = failures.get(fingerprint);
      if (failure !== undefined) failure.losses = 0;
    },
    drain(now, all = false) {
      const due: PendingRepeats[] = [];
      for (const failure of failures.values()) {
        if (failure.pending !== null && (all || failure.until <= now)) {
          due.push(failure.pending);
          failure.pending = null;
          // The event sent now is this failure's event for the next interval.
          failure.until = now + intervalMs;
        }
      }
      return due;
    },
    nextDrainAt() {
      let next: number | null = null;
      for (const failure of failures.values()) {
        if (failure.pending !== null && (next === null || failure.until < next)) {
          next = failure.until;
        }
      }
      return next;
    },
  };
}

/** The type, first message line (at most 200 characters) and throwing frame of one error. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return `${typeof error}:${String(error).slice(0, 200)}`;
  const thrownAt = error.stack?.split("\n").find((line) => line.trimStart().startsWith("at "));
  return `${error.name}:${firstLine(error).slice(0, 200)}:${thrownAt ?? ""}`;
}

/** What makes two reports the same failure. */
export function fingerprintOf(
  error: unknown,
  context: { status?: number; code?: string; route?: string; upstream?: string },
): string {
  const parts: unknown[] = [context.status, context.code, context.route, context.upstream];
  let current: unknown = error;
  for (let depth = 0; depth < MAX_CAUSES && current !== undefined; depth++) {
    parts.push(describe(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join("|");
}
