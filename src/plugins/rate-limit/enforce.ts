/**
 * @module
 * Checks a request against a list of policies for one key and turns the outcome into headers or a
 * refusal. Used by the rate-limit stage (keyed by client address), by the auth stage (keyed by the
 * authenticated principal) and by login (keyed by the account's email).
 */
import type { Logger } from "pino";
import type { Clock } from "../../clock";
import { AppError } from "../../errors";
import type { AuditLog } from "../audit/log";
import type { ResolvedClient } from "../client-ip";
import { rateLimitHeaders } from "./headers";
import type { RateLimitMetrics } from "./metrics";
import type { Policy } from "./policies";
import type { LimiterStore, LimitOutcome } from "./store";

export interface LimitContext {
  method: string;
  path: string;
  client: ResolvedClient;
  requestId: string;
}

export interface LimitEnforcerOptions {
  store: LimiterStore;
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  metrics: RateLimitMetrics;
  /** Told of every refusal; the IP blocker counts these as violations of the client's address. */
  onRefused?: (client: ResolvedClient, policyId: string, requestId: string) => void | Promise<void>;
}

export type LimitEnforcer = (
  policies: readonly Policy[],
  key: string,
  request: LimitContext,
) => Promise<Record<string, string> | null>;

/**
 * Resolves to the rate-limit headers of an admitted request (null when the store failed and the
 * policies let requests through); throws RATE_LIMITED, or SERVICE_UNAVAILABLE when the store
 * failed on a policy that fails closed. Pass the same `policies` array for the same route: the
 * rendering of its policy header is cached on it.
 */
export function createLimitEnforcer(options: LimitEnforcerOptions): LimitEnforcer {
  const { store, clock, logger, audit, metrics, onRefused } = options;

  return async function enforceLimits(policies, key, request) {
    const now = clock.now();
    let outcomes: LimitOutcome[];
    try {
      outcomes = await store.check(policies.map((policy) => ({ policy, key, now })));
    } catch (error) {
      const failClosed = policies.some((policy) => policy.failClosed);
      metrics.storeErrors.labels(failClosed ? "closed" : "open").inc();
      logger.error(
        { err: error, requestId: request.requestId, failClosed },
        "rate-limit store failed",
      );
      if (!failClosed) return null;
      throw new AppError(
        "SERVICE_UNAVAILABLE",
        "The rate limiter is unavailable; try again shortly.",
        undefined,
        { "retry-after": "1" },
      );
    }

    const refusedAt = outcomes.findIndex((o) => !o.admitted);
    const headers = rateLimitHeaders(policies, outcomes, now, refusedAt >= 0);
    if (refusedAt < 0) return headers;

    const policyId = policies[refusedAt]!.id;
    metrics.rejections.labels(policyId).inc();
    audit.record({
      type: "ratelimit.rejected",
      outcome: "denied",
      ip: request.client.ip,
      route: `${request.method} ${request.path}`,
      requestId: request.requestId,
      detail: { policy: policyId, key: key.slice(0, key.indexOf(":")) },
    });
    await onRefused?.(request.client, policyId, request.requestId);
    throw new AppError(
      "RATE_LIMITED",
      `Too many requests; retry in ${headers["retry-after"]} s.`,
      undefined,
      headers,
    );
  };
}
