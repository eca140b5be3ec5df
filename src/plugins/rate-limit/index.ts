/**
 * @module
 * The rate-limit stage. Runs before any parsing, on every path but the probes, keyed by client
 * address (the IPv4 address or IPv6 /64) until the request is authenticated. Each request is
 * counted against its route's policy (if the table names one) and the default policy, in that
 * order; the first refusal answers 429 with `Retry-After`, counts in `rate_limit_rejections_total`,
 * goes to the audit log and to the IP blocker as a violation.
 */
import { Elysia } from "elysia";
import type { Logger } from "pino";
import type { Clock } from "../../clock";
import { AppError } from "../../errors";
import type { AuditLog } from "../audit/log";
import type { ResolvedClient } from "../client-ip";
import { inRanges, parseRange } from "../client-ip/resolve";
import { stateOf } from "../request-state";
import { rateLimitHeaders } from "./headers";
import type { RateLimitMetrics } from "./metrics";
import { type Policy, type PolicyTable, UNLIMITED_PATHS } from "./policies";
import type { LimitCheck, LimiterStore } from "./store";

export interface RateLimitOptions {
  store: LimiterStore;
  policies: PolicyTable;
  allowCidrs: readonly string[];
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  metrics: RateLimitMetrics;
  /** Told of every refusal; the IP blocker counts these as violations. */
  onRefused?: (client: ResolvedClient, policyId: string, requestId: string) => void | Promise<void>;
}

export function rateLimit(options: RateLimitOptions) {
  const { store, policies, clock, logger, audit, metrics, onRefused } = options;
  const allowRanges = options.allowCidrs.map(parseRange);
  // One array per route policy, reused, so the header rendering cached on it is found again.
  const defaultOnly = [policies.defaultPolicy] as const;
  const layered = new Map<Policy, readonly Policy[]>();
  const policiesFor = (method: string, path: string): readonly Policy[] => {
    const routePolicy = policies.routePolicy(method, path);
    if (routePolicy === null) return defaultOnly;
    let list = layered.get(routePolicy);
    if (!list) {
      list = [routePolicy, policies.defaultPolicy];
      layered.set(routePolicy, list);
    }
    return list;
  };

  return new Elysia({ name: "palisade.rate-limit" })
    .onRequest(async function enforceRateLimit(context) {
      const { request, path, client, requestId } = stateOf(context);
      if (UNLIMITED_PATHS.has(path)) return;
      if (allowRanges.length > 0 && client.address && inRanges(client.address, allowRanges)) return;

      const now = clock.now();
      const key = `ip:${client.key}`;
      const applied = policiesFor(request.method, path);
      const checks: LimitCheck[] = applied.map((policy) => ({ policy, key, now }));

      let outcomes: Awaited<ReturnType<LimiterStore["check"]>>;
      try {
        outcomes = await store.check(checks);
      } catch (error) {
        const failClosed = checks.some((c) => c.policy.failClosed);
        metrics.storeErrors.labels(failClosed ? "closed" : "open").inc();
        logger.error({ err: error, requestId, failClosed }, "rate-limit store failed");
        if (!failClosed) return;
        throw new AppError(
          "SERVICE_UNAVAILABLE",
          "The rate limiter is unavailable; try again shortly.",
          undefined,
          { "retry-after": "1" },
        );
      }

      const refusedAt = outcomes.findIndex((o) => !o.admitted);
      const headers = rateLimitHeaders(applied, outcomes, now, refusedAt >= 0);
      if (refusedAt < 0) {
        Object.assign(context.set.headers, headers);
        return;
      }

      const policyId = checks[refusedAt]!.policy.id;
      metrics.rejections.labels(policyId).inc();
      audit.record({
        type: "ratelimit.rejected",
        outcome: "denied",
        ip: client.ip,
        route: `${request.method} ${path}`,
        requestId,
        detail: { policy: policyId },
      });
      await onRefused?.(client, policyId, requestId);
      throw new AppError(
        "RATE_LIMITED",
        `Too many requests; retry in ${headers["retry-after"]} s.`,
        undefined,
        headers,
      );
    })
    .as("global");
}
