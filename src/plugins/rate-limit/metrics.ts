import { METRIC } from "../metrics/names";
import { Counter, everyCombination, type Registry, startAtZero } from "../metrics/prom";
import { POLICY_IDS } from "./policies";

/**
 * `policy` labels of the refusals no route policy decides: a request of a user or API key that is
 * locked out (the rate-limit stage), and a sign-in refused while its account is locked (auth).
 */
export const LOCKED_OUT_POLICY_LABEL = "locked_out";
export const LOGIN_LOCKOUT_POLICY_LABEL = "login_lockout";
/** The sign-in limit counted per account (the login policy's second key), as the auth module names it. */
export const LOGIN_ACCOUNT_POLICY_LABEL = "login_account";
/** A large body past its client's or network's share of the bodies read at once (request guard). */
export const LARGE_BODIES_POLICY_LABEL = "large_bodies";

export function createRateLimitMetrics(registry: Registry) {
  const rejections = new Counter({
    name: METRIC.rateLimitRejections,
    help: "Requests refused by the rate limiter, by policy",
    labelNames: ["policy"] as const,
    registers: [registry],
  });
  const storeErrors = new Counter({
    name: METRIC.rateLimitStoreErrors,
    help: "Limiter store failures, by what the request got (open: let through, closed: refused)",
    labelNames: ["mode"] as const,
    registers: [registry],
  });
  startAtZero(
    rejections,
    everyCombination({
      policy: [
        ...POLICY_IDS,
        LOGIN_ACCOUNT_POLICY_LABEL,
        LOCKED_OUT_POLICY_LABEL,
        LOGIN_LOCKOUT_POLICY_LABEL,
        LARGE_BODIES_POLICY_LABEL,
      ],
    }),
  );
  startAtZero(storeErrors, everyCombination({ mode: ["open", "closed"] }));
  return { rejections, storeErrors };
}

export type RateLimitMetrics = ReturnType<typeof createRateLimitMetrics>;
