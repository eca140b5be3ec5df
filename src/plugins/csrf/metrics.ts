import { METRIC } from "../metrics/names";
import { Counter, type Registry } from "../metrics/prom";

export function createCsrfMetrics(registry: Registry) {
  return {
    failures: new Counter({
      name: METRIC.csrfFailures,
      help: "State-changing browser requests refused by the CSRF check",
      registers: [registry],
    }),
  };
}

export type CsrfMetrics = ReturnType<typeof createCsrfMetrics>;
