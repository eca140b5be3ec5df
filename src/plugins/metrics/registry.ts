/**
 * @module
 * One prom-client Registry per app (never the global default registry, so tests and several apps
 * in one process do not share counters), with prom-client's default process metrics.
 *
 * Most of them are registered at the first scrape instead of at start. prom-client's heap-space
 * gauges (`nodejs_heap_space_size_*_bytes`) call `v8.getHeapSpaceStatistics()` once when they are
 * registered, to find out whether the runtime has it, and in Bun that call walks the whole heap:
 * 10–40 ms of the start on the shared bench machine, more the larger the heap (`bun --cpu-prof`
 * showed 279 ms while zxcvbn's dictionaries were loaded at start). The others deferred with them
 * read their value when scraped and keep nothing between scrapes (memory, file descriptors, active
 * handles, the start time and version), so registering them just before the first scrape changes
 * no value a scrape shows; loading their modules was ~5 ms of every start (issue #13). What counts
 * from the start (CPU, event-loop lag, GC) is registered at once. The CPU counters are Palisade's
 * own (process-cpu.ts), the same as prom-client's without the OpenTelemetry API it loads.
 */
import { registerProcessCpu } from "./process-cpu";
import { Registry } from "./prom";

export { Registry } from "./prom";

/** The default metric whose registration walks the heap (a module of prom-client/lib/metrics). */
export const DEFERRED_DEFAULT_METRIC = "heapSpacesSizeAndUsed";

/** Defaults that count or watch from the moment they are registered: registered at start. */
const REGISTERED_AT_START = new Set(["processCpuTotal", "eventLoopLag", "gc"]);

type RegisterDefault = (registry: Registry, config: Record<string, unknown>) => void;

/**
 * prom-client's default metrics, in the order `collectDefaultMetrics` registers them (its
 * lib/defaultMetrics.js, which is not loaded: it requires every one of them, the CPU counters'
 * OpenTelemetry API included). A test checks that a scrape shows exactly the families
 * `collectDefaultMetrics` gives, so an upgrade that adds one is noticed.
 */
const DEFAULT_METRICS = [
  "processCpuTotal",
  "processStartTime",
  "osMemoryHeap",
  "processOpenFileDescriptors",
  "processMaxFileDescriptors",
  "eventLoopLag",
  ...(typeof process.getActiveResourcesInfo === "function" ? ["processResources"] : []),
  "processHandles",
  "processRequests",
  "heapSizeAndUsed",
  DEFERRED_DEFAULT_METRIC,
  "version",
  "gc",
];

/** Registers one of prom-client's defaults with `collectDefaultMetrics`'s default config. */
function registerDefault(registry: Registry, name: string) {
  const register = require(`prom-client/lib/metrics/${name}`) as RegisterDefault;
  register(registry, { eventLoopMonitoringPrecision: 10 });
}

class PalisadeRegistry extends Registry {
  private deferredRegistered = false;

  private registerDeferred() {
    if (this.deferredRegistered) return;
    this.deferredRegistered = true;
    for (const name of DEFAULT_METRICS) {
      if (!REGISTERED_AT_START.has(name)) registerDefault(this, name);
    }
  }

  override metrics() {
    this.registerDeferred();
    return super.metrics();
  }

  override getMetricsAsJSON() {
    this.registerDeferred();
    return super.getMetricsAsJSON();
  }
}

export function createMetricsRegistry(): Registry {
  const registry = new PalisadeRegistry();
  for (const name of DEFAULT_METRICS) {
    if (name === "processCpuTotal") registerProcessCpu(registry);
    else if (REGISTERED_AT_START.has(name)) registerDefault(registry, name);
  }
  return registry;
}
