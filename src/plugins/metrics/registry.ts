/**
 * @module
 * One prom-client Registry per app (never the global default registry, so tests and several apps
 * in one process do not share counters), with prom-client's default process metrics but one.
 *
 * The one left out is the heap-space family (`nodejs_heap_space_size_{total,used,available}_bytes`,
 * prom-client's heapSpacesSizeAndUsed). It reads `v8.getHeapSpaceStatistics()`, which Bun answers
 * by walking the whole heap: ~25 ms with a modest heap here, more the larger it grows, holding the
 * event loop (and every request waiting on it) at every scrape, and once more at registration. What
 * it reports under Bun is no V8 heap space either: one "old_space" standing for the whole JSC heap
 * and zeros, the same heap `nodejs_heap_size_{total,used}_bytes` already shows at no cost.
 *
 * Most of the others are registered at the first scrape instead of at start: they read their value
 * when scraped and keep nothing between scrapes (memory, file descriptors, active handles, the
 * start time and version), so registering them just before the first scrape changes no value a
 * scrape shows; loading their modules was ~5 ms of every start (issue #13). What counts from the
 * start (CPU, event-loop lag, GC) is registered at once. The CPU counters are Palisade's own
 * (process-cpu.ts), the same as prom-client's without the OpenTelemetry API it loads.
 */
import { registerProcessCpu } from "./process-cpu";
import { Registry } from "./prom";

export { Registry } from "./prom";

/** prom-client's default left out: it walks Bun's heap at every scrape (see above). */
export const OMITTED_DEFAULT_METRIC = "heapSpacesSizeAndUsed";

/** Defaults that count or watch from the moment they are registered: registered at start. */
const REGISTERED_AT_START = new Set(["processCpuTotal", "eventLoopLag", "gc"]);

type RegisterDefault = (registry: Registry, config: Record<string, unknown>) => void;

/**
 * prom-client's default metrics, in the order `collectDefaultMetrics` registers them (its
 * lib/defaultMetrics.js, which is not loaded: it requires every one of them, the CPU counters'
 * OpenTelemetry API included), but OMITTED_DEFAULT_METRIC. A test checks that a scrape shows
 * exactly the families `collectDefaultMetrics` gives but that one, so an upgrade that adds one is
 * noticed. Each is loaded by a literal `require`, not one computed from its name: the bundler
 * (`bun run build`) follows only literal ones, and a computed one made the bundle load a second
 * copy of these modules from wherever it found `node_modules` at run time.
 */
const DEFAULT_METRICS: ReadonlyArray<readonly [string, () => RegisterDefault]> = [
  // Palisade's own (process-cpu.ts): prom-client's loads the OpenTelemetry API.
  ["processCpuTotal", () => registerProcessCpu],
  ["processStartTime", () => require("prom-client/lib/metrics/processStartTime")],
  ["osMemoryHeap", () => require("prom-client/lib/metrics/osMemoryHeap")],
  [
    "processOpenFileDescriptors",
    () => require("prom-client/lib/metrics/processOpenFileDescriptors"),
  ],
  ["processMaxFileDescriptors", () => require("prom-client/lib/metrics/processMaxFileDescriptors")],
  ["eventLoopLag", () => require("prom-client/lib/metrics/eventLoopLag")],
  ...(typeof process.getActiveResourcesInfo === "function"
    ? ([["processResources", () => require("prom-client/lib/metrics/processResources")]] as const)
    : []),
  ["processHandles", () => require("prom-client/lib/metrics/processHandles")],
  ["processRequests", () => require("prom-client/lib/metrics/processRequests")],
  ["heapSizeAndUsed", () => require("prom-client/lib/metrics/heapSizeAndUsed")],
  ["version", () => require("prom-client/lib/metrics/version")],
  ["gc", () => require("prom-client/lib/metrics/gc")],
];

/** Registers one of prom-client's defaults with `collectDefaultMetrics`'s default config. */
function registerDefault(registry: Registry, load: () => RegisterDefault) {
  load()(registry, { eventLoopMonitoringPrecision: 10 });
}

class PalisadeRegistry extends Registry {
  private deferredRegistered = false;

  private registerDeferred() {
    if (this.deferredRegistered) return;
    this.deferredRegistered = true;
    for (const [name, load] of DEFAULT_METRICS) {
      if (!REGISTERED_AT_START.has(name)) registerDefault(this, load);
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
  for (const [name, load] of DEFAULT_METRICS) {
    if (REGISTERED_AT_START.has(name)) registerDefault(registry, load);
  }
  return registry;
}
