import { METRIC } from "../metrics/names";
import { Counter, type Registry } from "../metrics/prom";

/**
 * `policy` labels of the refusals no route policy decides: a request of a user or API key that is
 * locked out (the rate-limit stage), and a sign-in refused while its account is locked (auth).
 */
export const LOCKED_OUT_POLICY_LABEL = "locked_out";
export const LOGIN_LOCKOUT_POLICY_LABEL = "login_lockout";

export function createRateLimitMetrics(registry: Registry) {
  return {
    rejections: new Counter({
      name: METRIC.rateLimitRejections,
      help: "Requests refused by the rate limiter, by policy",
      labelNames: ["policy"] as const,
      registers: [registry],
    }),
    storeErrors: new Counter({
      name: METRIC.rateLimitStoreErrors,
      help: "Limiter store failures, by what the request got (open: let through, closed: refused)",
      labelNames: ["mode"] as const,
      registers: [registry],
    }),
  };
}

export type RateLimitMetrics = ReturnType<typeof createRateLimitMetrics>;
