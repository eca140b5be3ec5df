/**
 * @module
 * Whether Sentry takes the events sent to it. A DSN whose key was revoked, a project deleted, a
 * host that refuses connections, redirects or never answers: the SDK drops each event without a
 * word, and an operator who set SENTRY_DSN learned nothing of it (probes 55a F2, 57a F4). Each
 * event refused, not delivered, or dropped by the SDK before it was sent (backing off after a 429,
 * or its send queue full) is counted (`error_reports_failed_total{reason,kind}`), the first of a
 * run of them is logged as a warning, and the first taken at least `RUN_QUIET_MS` after the last
 * of them says how many were lost.
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

/** What a report is: an error event, or a sampled request's transaction. */
export const REPORT_KINDS = ["error", "transaction"] as const;
export type ReportKind = (typeof REPORT_KINDS)[number];
const REPORT_CATEGORIES: ReadonlySet<string> = new Set(REPORT_KINDS);

/**
 * The failure a drop the SDK records stands for, or null for one that is not a delivery failure
 * (sampled out, filtered by beforeSend), is counted where it happens (the transport's fetch:
 * `network_error`, `send_error`), or is of no report (spans, client reports).
 */
export function failureOfDrop(
  reason: string,
  category: string,
): { reason: DeliveryFailureReason; kind: ReportKind } | null {
  if (!REPORT_CATEGORIES.has(category)) return null;
  const kind = category as ReportKind;
  if (reason === "ratelimit_backoff") return { reason: "rate_limited", kind };
  if (reason === "queue_overflow") return { reason: "backlog", kind };
  return null;
}

export interface DeliveryWatch {
  /** Sentry answered an envelope of `kind` with `status`. */
  answered(status: number, kind: ReportKind): void;
  /** `count` reports of `kind` were lost for `reason` without an answer (`status` none). */
  lost(reason: DeliveryFailureReason, kind: ReportKind, count?: number): void;
}

/**
 * How long after the last loss a report taken ends the run: while a flood fills the send queue,
 * reports are dropped and taken by turns, and each turn ended a run and began another, two log
 * lines each (probe 89a F1: 234 lines in 8 s).
 */
export const RUN_QUIET_MS = 10_000;

export function createDeliveryWatch(
  logger: Logger,
  registry?: Registry,
  now: () => number = Date.now,
): DeliveryWatch {
  const failures: Counter<"reason" | "kind"> | null = registry
    ? counterIn<"reason" | "kind">(registry, {
        name: METRIC.errorReportsFailed,
        help: "Error reports (events, transactions) Sentry refused, that could not reach it or that the SDK dropped unsent, by reason and kind",
        labelNames: ["reason", "kind"],
      })
    : null;
  if (failures) {
    startAtZero(
      failures,
      everyCombination({ reason: DELIVERY_FAILURE_REASONS, kind: REPORT_KINDS }),
    );
  }
  let lostInRun = 0;
  let lastLossAt = 0;
  function failed(
    reason: DeliveryFailureReason,
    kind: ReportKind,
    status: number | null,
    count: number,
  ) {
    failures?.labels(reason, kind).inc(count);
    if (lostInRun === 0) {
      logger.warn(
        { reason, kind, status },
        "sentry did not take an error report: reports are lost until it does (error_reports_failed_total)",
      );
    }
    lostInRun += count;
    lastLossAt = now();
  }
  return {
    answered(status, kind) {
      const reason = failureOfStatus(status);
      if (reason !== null) return failed(reason, kind, status, 1);
      if (lostInRun === 0 || now() - lastLossAt < RUN_QUIET_MS) return;
      logger.info({ lost: lostInRun }, "sentry takes error reports again");
      lostInRun = 0;
    },
    lost(reason, kind, count = 1) {
      failed(reason, kind, null, count);
    },
  };
}
