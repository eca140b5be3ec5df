/**
 * @module
 * Whether Sentry takes the events sent to it. A DSN whose key was revoked, a project deleted, a
 * host that refuses connections or redirects: the SDK drops each event without a word, and an
 * operator who set SENTRY_DSN learned nothing of it (probe 55a F2). Each event refused or not
 * delivered is counted (`error_reports_failed_total{reason}`), the first of a run of them is
 * logged as a warning, and the first taken after them says how many were lost.
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

export const DELIVERY_FAILURE_REASONS = ["network", "rate_limited", "refused", "server"] as const;
export type DeliveryFailureReason = (typeof DELIVERY_FAILURE_REASONS)[number];

/** What became of one envelope: its HTTP status, or none when no answer came. */
export interface DeliveryOutcome {
  status: number | null;
}

export function failureReason(outcome: DeliveryOutcome): DeliveryFailureReason | null {
  const { status } = outcome;
  if (status === null) return "network";
  if (status >= 200 && status < 300) return null;
  if (status === 429) return "rate_limited";
  return status >= 500 ? "server" : "refused";
}

export function createDeliveryWatch(logger: Logger, registry?: Registry) {
  const failures: Counter<"reason"> | null = registry
    ? counterIn<"reason">(registry, {
        name: METRIC.errorReportsFailed,
        help: "Error reports (events, transactions) Sentry refused or that could not reach it, by reason",
        labelNames: ["reason"],
      })
    : null;
  if (failures) startAtZero(failures, everyCombination({ reason: DELIVERY_FAILURE_REASONS }));
  let lost = 0;
  return function delivered(outcome: DeliveryOutcome): void {
    const reason = failureReason(outcome);
    if (reason === null) {
      if (lost > 0) logger.info({ lost }, "sentry takes error reports again");
      lost = 0;
      return;
    }
    failures?.labels(reason).inc();
    if (lost++ === 0) {
      logger.warn(
        { reason, status: outcome.status },
        "sentry did not take an error report: reports are lost until it does (error_reports_failed_total)",
      );
    }
  };
}
