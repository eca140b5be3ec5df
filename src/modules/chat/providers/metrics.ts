/**
 * @module
 * The upstream metrics, beside the providers that count them. Get-or-create per registry, so two
 * providers (or two builds of one) on one app share the series instead of registering twice.
 */

import { METRIC } from "../../../plugins/metrics/names";
import {
  type Counter,
  counterIn,
  everyCombination,
  type Gauge,
  gaugeIn,
  type Histogram,
  histogramIn,
  type Registry,
  startAtZero,
} from "../../../plugins/metrics/prom";

export interface UpstreamMetrics {
  /** One observation per HTTP request to the upstream (each retry is its own), streams until their end. */
  requestDuration: Histogram<"provider">;
  /** 1 while the provider's circuit is open or half-open, 0 while closed. */
  circuitOpen: Gauge<"provider">;
  /**
   * Each HTTP request to the upstream that failed, retried or not, by kind (`unavailable`,
   * `bad_response`, or `refused`: a refusal of the request's content, 400, 413 or 422): counted whether
   * or not its caller was still waiting, so an upstream failing while impatient clients leave
   * (whose requests end as 499) still shows (re-probe 15d).
   */
  attemptFailures: Counter<"provider" | "kind">;
  /**
   * Requests that timed out while another stream of the process progressed (a busy upstream): each
   * also an attempt failure, but no verdict for the circuit breaker, so this is what says how often
   * the rule kept the circuit closed.
   */
  busyTimeouts: Counter<"provider">;
}

const REQUEST_DURATION = METRIC.upstreamRequestDuration;
const CIRCUIT_OPEN = METRIC.upstreamCircuitOpen;
const ATTEMPT_FAILURES = METRIC.upstreamAttemptFailures;
const BUSY_TIMEOUTS = METRIC.upstreamBusyTimeouts;

/** LLM calls run from tens of milliseconds (a cached or local model) to a minute (a long stream). */
export const UPSTREAM_DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60];

/** The kinds `upstream_attempt_failures_total` counts (a failure's kind, or `refused`). */
export const ATTEMPT_FAILURE_KINDS = ["unavailable", "bad_response", "refused"] as const;

/** `provider`: the upstream's name, whose failure series start at 0 (every kind). */
export function createUpstreamMetrics(registry: Registry, provider: string): UpstreamMetrics {
  const requestDuration = histogramIn<"provider">(registry, {
    name: REQUEST_DURATION,
    help: "Duration of each HTTP request to a chat upstream (a stream until its last chunk)",
    labelNames: ["provider"],
    buckets: UPSTREAM_DURATION_BUCKETS,
  });
  const circuitOpen = gaugeIn<"provider">(registry, {
    name: CIRCUIT_OPEN,
    help: "1 while the upstream's circuit breaker is open or half-open, 0 while closed",
    labelNames: ["provider"],
  });
  const attemptFailures = counterIn<"provider" | "kind">(registry, {
    name: ATTEMPT_FAILURES,
    help: "HTTP requests to a chat upstream that failed (each attempt, retried or not, whether or not its caller waited), by kind",
    labelNames: ["provider", "kind"],
  });
  startAtZero(
    attemptFailures,
    everyCombination({ provider: [provider], kind: ATTEMPT_FAILURE_KINDS }),
  );
  const busyTimeouts = counterIn<"provider">(registry, {
    name: BUSY_TIMEOUTS,
    help: "Chat upstream requests that timed out while another stream progressed (a busy upstream): not counted by the circuit breaker",
    labelNames: ["provider"],
  });
  startAtZero(busyTimeouts, [{ provider }]);
  // The requests are the failure alerts' denominator: exported at 0 as the failures are, or the
  // first failures after a start were counted against fewer requests than were made (probe 85f
  // F4: 160 % failing). A histogram has no inc(0), and zero() empties a series already counted.
  if (!hasSeries(requestDuration, provider)) requestDuration.zero({ provider });
  return { requestDuration, circuitOpen, attemptFailures, busyTimeouts };
}

/** Whether the histogram holds a series for this provider (prom-client's map of them). */
function hasSeries(histogram: Histogram<"provider">, provider: string): boolean {
  const series = (histogram as unknown as { hashMap: Record<string, { labels?: object }> }).hashMap;
  return Object.values(series).some(
    (each) => (each.labels as { provider?: string } | undefined)?.provider === provider,
  );
}
