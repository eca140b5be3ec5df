/**
 * @module
 * Checks a request against a list of policies, each for its own key, and turns the outcome into
 * headers or a refusal. Used by the rate-limit stage (each policy keyed by address or principal, as
 * the policy says) and by login (keyed by the account's email).
 */
import type { Clock } from "../../clock";
import { sqliteCodeOf } from "../../db/client";
import { AppError } from "../../errors";
import type { Logger } from "../../logging/logger";
import { faultKind } from "../../logging/repeats";
import type { AuditLog } from "../audit/log";
import { auditedOncePerWindow } from "../audit/once-per-window";
import type { ResolvedClient } from "../client-ip";
import { rateLimitHeaders } from "./headers";
import type { RateLimitMetrics } from "./metrics";
import type { Policy } from "./policies";
import type { LimiterStore, LimitOutcome, UnusedPermits } from "./store";

/**
 * How many keys' refusals one process audits in a window, per policy: the most rows a window of a
 * policy can add to the audit log, per process; the rest are counted in one row a window
 * (`audit.refusals_unrecorded`). 10,000 let a flood from rotating IPv6 /64s write ~5 MB a minute
 * of rows kept 90 days (probe 89b F2).
 */
export const REFUSAL_AUDIT_KEYS_PER_POLICY = 100;

/**
 * A limiter store that could not answer: counted (`rate_limit_store_errors_total{mode}`) and
 * logged (the first of a run of failures whole, the rest summed up: logging/repeats); for a
 * decision that fails closed, returns the 503 (with Retry-After) to throw, else null (let
 * through). The store's error goes with the report (never to the client), so a lock and a
 * missing table are two failures. The rate-limit stage, the login lockout and the IP blocker's
 * violation counts all end here.
 */
export function limiterFailed(
  error: unknown,
  context: StoreFailure & { failClosed: true },
): AppError;
export function limiterFailed(error: unknown, context: StoreFailure): AppError | null;
export function limiterFailed(error: unknown, context: StoreFailure): AppError | null {
  const { metrics, logger, requestId, failClosed, policy, lost } = context;
  metrics.storeErrors.labels(failClosed ? "closed" : "open").inc();
  const message = lost ? `rate-limit store failed: ${lost}` : "rate-limit store failed";
  // Failing for every request while the store is down: one line each 10 s says how many more.
  logger
    .repeating(
      `${message}${policy ? ` (${policy})` : ""}${failClosed ? ", refused" : ""} — ${sqliteCodeOf(error) ?? faultKind(error)}`,
    )
    .error({ err: error, requestId, failClosed, ...(policy ? { policy } : {}) }, message);
  if (!failClosed) return null;
  return new AppError(
    "SERVICE_UNAVAILABLE",
    "The rate limiter is unavailable; try again shortly.",
    undefined,
    { "retry-after": "1" },
  ).causedBy(error);
}

interface StoreFailure {
  metrics: RateLimitMetrics;
  logger: Logger;
  requestId: string | null;
  failClosed: boolean;
  /** Named in the log line when the decision is not the route's policies (the lockout). */
  policy?: string;
  /** What the failure lost, said in the log line, when not a request's own decision. */
  lost?: string;
}

export interface LimitContext {
  method: string;
  path: string;
  client: ResolvedClient;
  requestId: string;
  /**
   * The principal a refusal counted per principal names as its actor (`principalRef`): a bootstrap
   * key is counted under a name of its own (auth/principal limitNameOf). Absent: the key itself.
   */
  actor?: string | null;
  /** Told what an admitted request was charged, for a handler that may give it back (refund). */
  charged?: (charge: LimitCharge) => void;
  /**
   * Its refusal is no violation, whatever its policy: another site's page made the visitor's
   * browser send it (cross-site/isCrossSiteNavigation), so a block would be the visitor's.
   */
  sentForAnotherSite?: boolean;
}

/** What an admitted request counted: one permit of each policy, for its key, in these windows. */
export interface LimitCharge {
  policies: readonly Policy[];
  keys: LimitKeys;
  outcomes: readonly LimitOutcome[];
}

export interface LimitEnforcerOptions {
  store: LimiterStore;
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  metrics: RateLimitMetrics;
  /**
   * Told of every refusal with the key that was refused (but a policy's whose refusals are no
   * violation): the IP blocker counts it against the principal when the key is one, else against
   * the client's address. Returns when the block or lockout this refusal made ends (ms), or
   * nothing when it made none.
   */
  onRefused?: (refusal: {
    client: ResolvedClient;
    policyId: string;
    key: string;
    requestId: string;
  }) => number | null | undefined | Promise<number | null | undefined>;
  /** REFUSAL_AUDIT_KEYS_PER_POLICY unless given (tests). */
  auditedKeys?: number;
}

/** One key for every policy, or one key per policy (same order). */
export type LimitKeys = string | readonly string[];

export interface LimitEnforcer {
  (
    policies: readonly Policy[],
    keys: LimitKeys,
    request: LimitContext,
  ): Promise<Record<string, string> | null>;
  /**
   * The headers of a request admitted here and now, without waiting for the store (a permit of a
   * lease), or undefined with nothing counted: then the enforcer itself decides. Spares the
   * busiest path (a hot client well under its limit) a promise and a wait per request.
   */
  admitNow(policies: readonly Policy[], keys: LimitKeys): Record<string, string> | undefined;
  /**
   * Gives back what an admitted request was charged (of the policies `keep` keeps, every one when
   * absent), when the request was refused before any work: for a reason of the service's own (the
   * password queue full), or of another subject's limit (a sign-in refused for its account).
   */
  refund(charge: LimitCharge, keep?: (policy: Policy) => boolean): void;
}

/**
 * Resolves to the rate-limit headers of an admitted request (null when the store failed and the
 * policies let requests through); throws RATE_LIMITED, or SERVICE_UNAVAILABLE when the store
 * failed on a policy that fails closed. Pass the same `policies` array for the same route: the
 * rendering of its policy header is cached on it.
 */
export function createLimitEnforcer(options: LimitEnforcerOptions): LimitEnforcer {
  const { store, clock, logger, audit, metrics, onRefused } = options;
  const auditedKeys = options.auditedKeys ?? REFUSAL_AUDIT_KEYS_PER_POLICY;
  /**
   * Refusals audited once per key and window, per policy: one bound per policy, so a flood on one
   * route cannot keep another policy's refusals (a login brute force) out of the audit log.
   */
  const firstRefusalInWindow = auditedOncePerWindow(audit, "ratelimit.rejected", auditedKeys);

  const checksOf = (policies: readonly Policy[], keys: LimitKeys, now: number) =>
    policies.map((policy, i) => ({ policy, key: keyOf(keys, i), now }));

  /** The refusal of a request the store refused: counted, audited, a violation, then thrown. */
  const refuse = async (
    policies: readonly Policy[],
    keys: LimitKeys,
    request: LimitContext,
    outcomes: readonly LimitOutcome[],
    refusedAt: number,
    now: number,
  ): Promise<never> => {
    // The store's decision is one over all of the policies (rate-limit/coalesce.ts): a request
    // refused by any of them is counted by none, so its headers and Retry-After are the windows as
    // they stand (probes 46a F1, 47a F2, 48a F3).
    const headers = rateLimitHeaders(policies, outcomes, now, true);
    const refusedBy = policies[refusedAt]!;
    const policyId = refusedBy.id;
    const key = keyOf(keys, refusedAt);
    metrics.rejections.labels(policyId).inc();
    // A refusal decided in a window that starts after this clock's now (the clock set back:
    // rollForward) may have counted more than the client sent in the last window: refused, but no
    // step towards a block (probes 25b, 25c: clients at half their limit blocked).
    const refusedOutcome = outcomes[refusedAt]!;
    const decidedAhead = refusedOutcome.windowStart > now || refusedOutcome.burstWindowStart > now;
    const violation =
      refusedBy.refusalIsViolation !== false &&
      !decidedAhead &&
      request.sentForAnotherSite !== true;
    // Audited once per key and window, whether it can block or not: a chained row per refusal
    // up to a block was five or six rows for each IPv6 /64 a flood rotates through, kept 90 days
    // (probe 89b F2); the block itself is audited (`ip.blocked`), and every refusal is counted.
    if (firstRefusalInWindow(policyId, key, now, refusedBy.windowMs)) {
      audit.record({
        type: "ratelimit.rejected",
        outcome: "denied",
        // A refusal counted per principal names it (`user:<id>`, `key:<id>`), so the audit log can
        // say who was refused, not only from where; an address- or account-keyed refusal (`ip:`,
        // `account:<hash of the email>`) has no principal behind it.
        actor: key.startsWith("user:") || key.startsWith("key:") ? (request.actor ?? key) : null,
        ip: request.client.ip,
        route: `${request.method} ${request.path}`,
        requestId: request.requestId,
        detail: { policy: policyId, key: key.slice(0, key.indexOf(":")) },
      });
    }
    if (violation) {
      const blockedUntil = await onRefused?.({
        client: request.client,
        policyId,
        key,
        requestId: request.requestId,
      });
      // The refusal that made a block or lockout: no retry is admitted before it ends, and a retry
      // made sooner, as the limit alone said, was refused again (probe 51a F1).
      if (typeof blockedUntil === "number" && blockedUntil > now) {
        const blockSeconds = Math.ceil((blockedUntil - now) / 1000);
        if (blockSeconds > Number(headers["retry-after"])) {
          headers["retry-after"] = String(blockSeconds);
        }
      }
    }
    throw new AppError(
      "RATE_LIMITED",
      `Too many requests; retry in ${headers["retry-after"]} s.`,
      undefined,
      headers,
    );
  };

  // A promise callback, not an `async` function awaiting the store: the admitted request's answer
  // is one layer nearer (see plugins/rate-limit/index.ts).
  const enforceLimits = function enforceLimits(
    policies: readonly Policy[],
    keys: LimitKeys,
    request: LimitContext,
  ): Promise<Record<string, string> | null> {
    const now = clock.now();
    let decided: Promise<LimitOutcome[]>;
    try {
      decided = store.check(checksOf(policies, keys, now));
    } catch (error) {
      decided = Promise.reject(error);
    }
    return decided.then(
      (outcomes) => {
        const refusedAt = outcomes.findIndex((o) => !o.admitted);
        if (refusedAt < 0) {
          request.charged?.({ policies, keys, outcomes });
          return rateLimitHeaders(policies, outcomes, now, false);
        }
        return refuse(policies, keys, request, outcomes, refusedAt, now);
      },
      (error: unknown) => {
        const failClosed = policies.some((policy) => policy.failClosed);
        const refusal = limiterFailed(error, {
          metrics,
          logger,
          requestId: request.requestId,
          failClosed,
        });
        if (refusal) throw refusal;
        return null;
      },
    );
  };
  const admitNow = (policies: readonly Policy[], keys: LimitKeys) => {
    if (store.checkNow === undefined) return undefined;
    const now = clock.now();
    const outcomes = store.checkNow(checksOf(policies, keys, now));
    return outcomes === undefined ? undefined : rateLimitHeaders(policies, outcomes, now, false);
  };
  const refund = (charge: LimitCharge, keep?: (policy: Policy) => boolean) => {
    store.giveBack(permitsOf(charge, keep));
  };
  return Object.assign(enforceLimits, { admitNow, refund });
}

/** One permit of each policy of a charge (those `keep` keeps), to give back. */
function permitsOf(
  { policies, keys, outcomes }: LimitCharge,
  keep: (policy: Policy) => boolean = () => true,
): UnusedPermits[] {
  const permits: UnusedPermits[] = [];
  for (let i = 0; i < policies.length; i++) {
    const policy = policies[i]!;
    if (!keep(policy)) continue;
    permits.push({
      policy,
      key: keyOf(keys, i),
      windowStart: outcomes[i]!.windowStart,
      burstWindowStart: outcomes[i]!.burstWindowStart,
      count: 1,
    });
  }
  return permits;
}

function keyOf(keys: LimitKeys, index: number): string {
  return typeof keys === "string" ? keys : keys[index]!;
}
