import { Counter, Histogram, type Registry } from "prom-client";

/** The request counters the dashboards are built on. `route` is the pattern, never the raw path. */
export function createHttpMetrics(registry: Registry) {
  const requests = new Counter({
    name: "http_requests_total",
    help: "HTTP requests answered, by method, route pattern and status",
    labelNames: ["method", "route", "status"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "http_request_duration_seconds",
    help: "Time from receiving a request to sending its response",
    labelNames: ["method", "route"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  // Label lookups hash the label set on every call; the children are few, so keep them.
  const requestChildren = new Map<string, ReturnType<typeof requests.labels>>();
  const durationChildren = new Map<string, ReturnType<typeof duration.labels>>();
  return {
    observe(method: string, route: string, status: number, seconds: number) {
      const routeKey = `${method} ${route}`;
      const requestKey = `${routeKey} ${status}`;
      let counter = requestChildren.get(requestKey);
      if (!counter) {
        counter = requests.labels(method, route, String(status));
        requestChildren.set(requestKey, counter);
      }
      counter.inc();
      let histogram = durationChildren.get(routeKey);
      if (!histogram) {
        histogram = duration.labels(method, route);
        durationChildren.set(routeKey, histogram);
      }
      histogram.observe(seconds);
    },
  };
}

export type HttpMetrics = ReturnType<typeof createHttpMetrics>;
