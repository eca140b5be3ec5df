/**
 * @module
 * One prom-client Registry per app (never the global default registry, so tests and several apps
 * in one process do not share counters), with prom-client's default process metrics.
 */
import { collectDefaultMetrics, Registry } from "prom-client";

export type { Registry } from "prom-client";

export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}
