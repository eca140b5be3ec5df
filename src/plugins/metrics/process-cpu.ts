/**
 * @module
 * The process CPU counters of prom-client's default metrics — `process_cpu_user_seconds_total`,
 * `process_cpu_system_seconds_total`, `process_cpu_seconds_total` — written here because
 * prom-client's own module requires @opentelemetry/api when it loads, for exemplars Palisade never
 * enables: 51 modules, ~20 ms of CPU and ~1 MB of every start on the shared bench machine. Same
 * names, help and values as prom-client's: the CPU used since the registry was made, advanced at
 * each scrape (a test compares the families with `collectDefaultMetrics`).
 */
import { Counter, type Registry } from "./prom";

export function registerProcessCpu(registry: Registry): void {
  let last = process.cpuUsage();
  const user: Counter = new Counter({
    name: "process_cpu_user_seconds_total",
    help: "Total user CPU time spent in seconds.",
    registers: [registry],
    // One collect advances all three, so a scrape reads the usage once and they always add up.
    collect() {
      const now = process.cpuUsage();
      const userMicros = now.user - last.user;
      const systemMicros = now.system - last.system;
      last = now;
      user.inc(userMicros / 1e6);
      system.inc(systemMicros / 1e6);
      total.inc((userMicros + systemMicros) / 1e6);
    },
  });
  const system = new Counter({
    name: "process_cpu_system_seconds_total",
    help: "Total system CPU time spent in seconds.",
    registers: [registry],
  });
  const total = new Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds.",
    registers: [registry],
  });
}
