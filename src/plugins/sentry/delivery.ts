/**
 * @module
 * Whether Sentry takes the events sent to it. A DSN whose key was revoked, a project deleted, a
 * host that refuses connections, redirects or never answers: the SDK drops each event without a
 * word, and an operator who set SENTRY_DSN learned nothing of it (probes 55a F2, 57a F4). Each
 * event refused, not delivered, or dropped by the SDK before it was sent (backing off after a 429,
 * or its send buffer full) is counted (`error_reports_failed_total{reason}`), the first of a run
 * of them is logged as a warning, and the first taken after them says how many were lost.
 */
import type { Logger } from "../../logging/logger";
import { METRIC } from "../metrics/names";
import {
  type Counter,
  counterIn,
  everyCombination,
  type Registry,
  startAtZero,
} from "../metrics/prom";

export const DELIVERY_FAILURE_REASONS = [
  "backlog",
  "network",
  "rate_limited",
  "refused",
  "server",
  "timeout",
] as const;
export type DeliveryFailureReason = (typeof DELIVERY_FAILURE_REASONS)[number];

/** The failure an answer from Sentry stands for, or null when it took the envelope. */
export function failureOfStatus(status: number): DeliveryFailureReason | null {
  if (status >= 200 && status < 300) return null;
  if (status === 429) return "rate_limited";
  return status >= 500 ? "server" : "refused";
}

/** The data categories that are reports (errors and transactions), not their parts or sessions. */
const REPORT_CATEGORIES: ReadonlySet<string> = new Set(["error", "transaction"]);

/**
 * The failure a drop the SDK records stands for, or null for one that is not a delivery failure
 * (sampled out, filtered by beforeSend) or is counted where it happens (the transport's fetch:
 * `network_error`, `send_error`).
 */
export function failureOfDrop(reason: string, category: string): DeliveryFailureReason | null {
  if (!REPORT_CATEGORIES.has(category)) return null;
  if (reason === "ratelimit_backoff") return "rate_limited";
  if (reason === "queue_overflow") return "backlog";
  return null;
}

export interface DeliveryWatch {
  /** Sentry answered an envelope with `status`. */
  answered(status: number): void;
  /** `count` reports were lost for `reason` without an answer (`status` none). */
  lost(reason: DeliveryFailureReason, count?: number): void;
}

export function createDeliveryWatch(logger: Logger, registry?: Registry): DeliveryWatch {
  const failures: Counter<"reason"> | null = registry
    ? counterIn<"reason">(registry, {
        name: METRIC.errorReportsFailed,
        help: "Error reports (events, transactions) Sentry refused, that could not reach it or that the SDK dropped unsent, by reason",
        labelNames: ["reason"],
      })
    : null;
  if (failures) startAtZero(failures, everyCombination({ reason: DELIVERY_FAILURE_REASONS }));
  let lostInRun = 0;
  function failed(reason: DeliveryFailureReason, status: number | null, count: number) {
    failures?.labels(reason).inc(count);
    if (lostInRun === 0) {
      logger.warn(
        { reason, status },
        "sentry did not take an error report: reports are lost until it does (error_reports_failed_total)",
      );
    }
    lostInRun += count;
  }
  return {
    answered(status) {
      const reason = failureOfStatus(status);
      if (reason !== null) return failed(reason, status, 1);
      if (lostInRun > 0) logger.info({ lost: lostInRun }, "sentry takes error reports again");
      lostInRun = 0;
    },
    lost(reason, count = 1) {
      failed(reason, null, count);
    },
  };
}
