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
