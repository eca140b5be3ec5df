/**
 * @module
 * prom-client's metric classes, each required from its own module. The package's index also loads
 * its Pushgateway client — node:http, node:https, node:url and zlib — and the cluster aggregator,
 * none of which Palisade uses: 80–160 ms of the start on the shared bench machine. Import metric
 * classes from here, never from "prom-client" itself (types may come from there); a test walks
 * src/ to keep it so.
 */
import type * as Prom from "prom-client";

export const Registry = require("prom-client/lib/registry") as typeof Prom.Registry;
export type Registry = Prom.Registry;
export const Counter = require("prom-client/lib/counter") as typeof Prom.Counter;
export type Counter<T extends string = string> = Prom.Counter<T>;
export const Gauge = require("prom-client/lib/gauge") as typeof Prom.Gauge;
export type Gauge<T extends string = string> = Prom.Gauge<T>;
export const Histogram = require("prom-client/lib/histogram") as typeof Prom.Histogram;
export type Histogram<T extends string = string> = Prom.Histogram<T>;

/**
 * Creates each series `labelSets` names at 0. A labelled series otherwise appears at its first
 * increment, already at 1, and Prometheus's `increase()` and `rate()` cannot count the step from no
 * series to its first value: the first dispute after a start paged no one, and a first burst of
 * forged webhook signatures stayed under its alert's threshold (probe 27c F1). So every label value
 * an alert or a dashboard reads is known, at 0, from the start.
 */
export function startAtZero<T extends string>(
  counter: Counter<T>,
  labelSets: Iterable<Partial<Record<T, string>>>,
): void {
  for (const labels of labelSets) counter.inc(labels, 0);
}

/** Every combination of the values listed for each label, as label sets for startAtZero. */
export function everyCombination<T extends string>(
  values: Record<T, readonly string[]>,
): Partial<Record<T, string>>[] {
  let sets: Partial<Record<T, string>>[] = [{}];
  for (const name of Object.keys(values) as T[]) {
    sets = sets.flatMap((set) => values[name].map((value) => ({ ...set, [name]: value })));
  }
  return sets;
}

/*
 * A feature's metrics, got from the app's registry when a builder before registered them, else
 * registered there: two builders on one app (two providers, a rebuilt one) share the series
 * instead of registering a name twice.
 */

export function counterIn<T extends string>(
  registry: Registry,
  configuration: Omit<Prom.CounterConfiguration<T>, "registers">,
): Counter<T> {
  return (
    (registry.getSingleMetric(configuration.name) as Counter<T> | undefined) ??
    new Counter({ ...configuration, registers: [registry] })
  );
}

export function gaugeIn<T extends string>(
  registry: Registry,
  configuration: Omit<Prom.GaugeConfiguration<T>, "registers">,
): Gauge<T> {
  return (
    (registry.getSingleMetric(configuration.name) as Gauge<T> | undefined) ??
    new Gauge({ ...configuration, registers: [registry] })
  );
}

export function histogramIn<T extends string>(
  registry: Registry,
  configuration: Omit<Prom.HistogramConfiguration<T>, "registers">,
): Histogram<T> {
  return (
    (registry.getSingleMetric(configuration.name) as Histogram<T> | undefined) ??
    new Histogram({ ...configuration, registers: [registry] })
  );
}
