/**
 * @module
 * One event per failure per minute. While a dependency is down (the database locked past its
 * timeout, an upstream refusing), every request fails the same way: one Sentry event each would
 * spend the project's quota in minutes and bury the next, different failure. A failure is its
 * fingerprint (status, code, route, upstream, and the error's type, first message line and the
 * frame it was thrown from: one message thrown from two places is two failures); its
 * first report is sent, the repeats within the interval are only counted, and the next event
 * sent for it carries how many there were (`extra.repeats`). Logs and metrics still see every one.
 */

export const REPORT_INTERVAL_MS = 60_000;
/** Distinct failures tracked at once; past it (all still within their interval) new ones are sent. */
const MAX_FINGERPRINTS = 1_000;

export interface ReportThrottle {
  /**
   * Whether to send this occurrence: null when it is a repeat within the interval (counted), else
   * how many repeats were counted since the last one sent.
   */
  admit(fingerprint: string, now: number): number | null;
}

export function createReportThrottle(
  intervalMs = REPORT_INTERVAL_MS,
  maxFingerprints = MAX_FINGERPRINTS,
): ReportThrottle {
  const failures = new Map<string, { until: number; repeats: number }>();
  let sweptAt = Number.NEGATIVE_INFINITY;
  return {
    admit(fingerprint, now) {
      const known = failures.get(fingerprint);
      if (known !== undefined && now < known.until) {
        known.repeats++;
        return null;
      }
      if (known === undefined && failures.size >= maxFingerprints && now - sweptAt >= 1000) {
        sweptAt = now;
        for (const [key, entry] of failures) if (entry.until <= now) failures.delete(key);
      }
      // Still full: sent untracked, rather than a new failure going unreported.
      if (known !== undefined || failures.size < maxFingerprints) {
        failures.set(fingerprint, { until: now + intervalMs, repeats: 0 });
      }
      return known?.repeats ?? 0;
    },
  };
}

/** What makes two reports the same failure. */
export function fingerprintOf(
  error: unknown,
  context: { status?: number; code?: string; route?: string; upstream?: string },
): string {
  const name = error instanceof Error ? error.name : typeof error;
  const message = error instanceof Error ? error.message : String(error);
  const firstLine = message.slice(0, 200).split("\n", 1)[0];
  const thrownAt =
    error instanceof Error
      ? (error.stack?.split("\n").find((line) => line.trimStart().startsWith("at ")) ?? "")
      : "";
  return [
    context.status,
    context.code,
    context.route,
    context.upstream,
    name,
    firstLine,
    thrownAt,
  ].join("|");
}
