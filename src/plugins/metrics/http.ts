/**
 * @module
 * The request metrics the dashboards are built on: `http_requests_total{method,route,status}` and
 * the `http_request_duration_seconds{method,route}` histogram. `route` is the pattern, never the
 * raw path.
 *
 * Counted in plain maps and rendered for prom-client only when scraped: prom-client's labelled
 * `inc`/`observe` hash the label set on every call, ~2 µs a request here, against ~0.2 µs for a map
 * lookup. Registered as custom collectors, so they appear in the same registry output in the same
 * format.
 */
import type { Registry } from "prom-client";

export const DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

interface RequestCount {
  labels: { method: string; route: string; status: string };
  value: number;
}

interface Durations {
  labels: { method: string; route: string };
  /** Non-cumulative counts per bucket; the last slot is +Inf. */
  buckets: number[];
  sum: number;
  count: number;
}

interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** What prom-client's Registry reads from a metric. */
interface Collector {
  name: string;
  help: string;
  type: "counter" | "histogram";
  aggregator: "sum";
  get(): { name: string; help: string; type: string; values: MetricValue[]; aggregator: "sum" };
  reset(): void;
}

export function createHttpMetrics(registry: Registry) {
  const requests = new Map<string, RequestCount>();
  const durations = new Map<string, Durations>();

  const requestsCollector: Collector = {
    name: "http_requests_total",
    help: "HTTP requests answered, by method, route pattern and status",
    type: "counter",
    aggregator: "sum",
    get() {
      return {
        name: this.name,
        help: this.help,
        type: this.type,
        aggregator: "sum",
        values: [...requests.values()].map(({ labels, value }) => ({ labels, value })),
      };
    },
    reset: () => requests.clear(),
  };

  const durationCollector: Collector = {
    name: "http_request_duration_seconds",
    help: "Time from receiving a request to sending its response",
    type: "histogram",
    aggregator: "sum",
    get() {
      const values: MetricValue[] = [];
      for (const { labels, buckets, sum, count } of durations.values()) {
        let cumulative = 0;
        DURATION_BUCKETS.forEach((le, i) => {
          cumulative += buckets[i]!;
          values.push({
            metricName: `${this.name}_bucket`,
            labels: { le, ...labels },
            value: cumulative,
          });
        });
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { le: "+Inf", ...labels },
          value: count,
        });
        values.push({ metricName: `${this.name}_sum`, labels, value: sum });
        values.push({ metricName: `${this.name}_count`, labels, value: count });
      }
      return { name: this.name, help: this.help, type: this.type, aggregator: "sum", values };
    },
    reset: () => durations.clear(),
  };

  // prom-client accepts any object of this shape; its own types only describe its classes.
  registry.registerMetric(
    requestsCollector as unknown as Parameters<Registry["registerMetric"]>[0],
  );
  registry.registerMetric(
    durationCollector as unknown as Parameters<Registry["registerMetric"]>[0],
  );

  return {
    observe(method: string, route: string, status: number, seconds: number) {
      const routeKey = `${method} ${route}`;
      const requestKey = `${routeKey} ${status}`;
      let counted = requests.get(requestKey);
      if (!counted) {
        counted = { labels: { method, route, status: String(status) }, value: 0 };
        requests.set(requestKey, counted);
      }
      counted.value++;
      let timed = durations.get(routeKey);
      if (!timed) {
        timed = {
          labels: { method, route },
          buckets: new Array(DURATION_BUCKETS.length).fill(0),
          sum: 0,
          count: 0,
        };
        durations.set(routeKey, timed);
      }
      let bucket = 0;
      while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++;
      if (bucket < DURATION_BUCKETS.length) timed.buckets[bucket]!++;
      timed.sum += seconds;
      timed.count++;
    },
  };
}

export type HttpMetrics = ReturnType<typeof createHttpMetrics>;
