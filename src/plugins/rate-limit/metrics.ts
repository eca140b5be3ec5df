import { Counter, type Registry } from "../metrics/prom";

export function createRateLimitMetrics(registry: Registry) {
  return {
    rejections: new Counter({
      name: "rate_limit_rejections_total",
      help: "Requests refused by the rate limiter, by policy",
      labelNames: ["policy"] as const,
      registers: [registry],
    }),
    storeErrors: new Counter({
      name: "rate_limit_store_errors_total",
      help: "Limiter store failures, by what the request got (open: let through, closed: refused)",
      labelNames: ["mode"] as const,
      registers: [registry],
    }),
  };
}

export type RateLimitMetrics = ReturnType<typeof createRateLimitMetrics>;
