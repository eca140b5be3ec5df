import { METRIC } from "../metrics/names";
import { Counter, type Registry } from "../metrics/prom";

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
