import { afterEach, expect, test } from "bun:test";
import { collectDefaultMetrics, Registry } from "prom-client";
import { createMetricsRegistry } from "../../src/plugins/metrics/registry";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** The metric families a Prometheus text exposition declares, from its `# TYPE` lines. */
function families(text: string): string[] {
  return [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)]
    .map(([, name, type]) => `${name} ${type}`)
    .sort();
}

const HEAP_SPACE_FAMILIES = [
  "nodejs_heap_space_size_available_bytes gauge",
  "nodejs_heap_space_size_total_bytes gauge",
  "nodejs_heap_space_size_used_bytes gauge",
];

test("a scrape shows every one of prom-client's default metrics, as collectDefaultMetrics registers them, but the heap spaces", async () => {
  const reference = new Registry();
  collectDefaultMetrics({ register: reference });
  const expected = families(await reference.metrics());
  // The family left out is there in prom-client's own: the comparison would notice it coming back.
  for (const family of HEAP_SPACE_FAMILIES) expect(expected).toContain(family);
  const ours = createMetricsRegistry();
  const first = await ours.metrics();
  expect(families(first)).toEqual(
    expected.filter((family) => !HEAP_SPACE_FAMILIES.includes(family)),
  );
  expect(first).toMatch(/^nodejs_heap_size_used_bytes \d+$/m);
  // Registered once: the second scrape is the same list, with no duplicate-registration error.
  expect(families(await ours.metrics())).toEqual(families(first));
  expect((await ours.getMetricsAsJSON()).length).toBe(
    (await reference.getMetricsAsJSON()).length - HEAP_SPACE_FAMILIES.length,
  );
});

test("a scrape never reads the heap spaces, whose reading walks Bun's whole heap", async () => {
  const v8 = require("node:v8") as typeof import("node:v8");
  const original = v8.getHeapSpaceStatistics;
  let reads = 0;
  v8.getHeapSpaceStatistics = () => {
    reads++;
    return original();
  };
  try {
    const registry = createMetricsRegistry();
    await registry.metrics();
    await registry.metrics();
    expect(reads).toBe(0);
    // prom-client's own defaults do read them: the counting above would see a read.
    const reference = new Registry();
    collectDefaultMetrics({ register: reference });
    await reference.metrics();
    expect(reads).toBeGreaterThan(0);
  } finally {
    v8.getHeapSpaceStatistics = original;
  }
});

test("defaults read at scrape time are registered at the first scrape, with the values prom-client's give", async () => {
  const registry = createMetricsRegistry();
  // Nothing of theirs is kept between scrapes, so nothing is lost by registering them late.
  for (const name of [
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "nodejs_version_info",
    "nodejs_heap_size_used_bytes",
  ]) {
    expect(registry.getSingleMetric(name)).toBeUndefined();
  }
  // What counts from the start is there at once.
  expect(registry.getSingleMetric("nodejs_gc_duration_seconds")).toBeDefined();
  const text = await registry.metrics();
  const reference = new Registry();
  collectDefaultMetrics({ register: reference });
  const value = (exposition: string, name: string) =>
    new RegExp(`^${name} (\\S+)$`, "m").exec(exposition)?.[1];
  const startTime = value(text, "process_start_time_seconds");
  expect(Number(startTime)).toBeGreaterThan(1_600_000_000);
  expect(startTime).toBe(value(await reference.metrics(), "process_start_time_seconds"));
  expect(Number(value(text, "process_resident_memory_bytes"))).toBeGreaterThan(0);
  expect(Number(value(text, "process_open_fds"))).toBeGreaterThan(0);
});

test("GET /metrics carries the heap size from its first answer, and no heap-space family", async () => {
  current = buildTestApp();
  const response = await send(current, "/metrics");
  expect(response.status).toBe(200);
  const text = await response.text();
  expect(text).toMatch(/^nodejs_heap_size_total_bytes \d+$/m);
  expect(text).not.toContain("nodejs_heap_space_size");
});

test("process_cpu_seconds_total counts the CPU used since the registry was made, user plus system", async () => {
  const registry = createMetricsRegistry();
  // Burn 60 ms of CPU (not of wall time: on a loaded machine the two differ a lot).
  const cpuMicros = () => process.cpuUsage().user + process.cpuUsage().system;
  const burnUntil = cpuMicros() + 60_000;
  let spin = 0;
  while (cpuMicros() < burnUntil) spin++;
  expect(spin).toBeGreaterThan(0);
  const text = await registry.metrics();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
  const total = value("process_cpu_seconds_total");
  expect(total).toBeGreaterThanOrEqual(0.05);
  // Well under the process's whole CPU time, which includes loading this test file.
  expect(total).toBeLessThan(process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6);
  expect(total).toBeCloseTo(
    value("process_cpu_user_seconds_total") + value("process_cpu_system_seconds_total"),
    9,
  );
  expect(text).toContain(
    "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
  );
});
