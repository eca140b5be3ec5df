import { expect, test } from "bun:test";
import { Histogram, Registry } from "prom-client";
import { createHttpMetrics, DURATION_BUCKETS } from "../../src/plugins/metrics/http";

test("the request metrics render exactly as prom-client's own counter and histogram would", async () => {
  const ours = new Registry();
  const http = createHttpMetrics(ours);
  const reference = new Registry();
  const histogram = new Histogram({
    name: "http_request_duration_seconds",
    help: "Time from receiving a request to sending its response",
    labelNames: ["method", "route"],
    buckets: DURATION_BUCKETS,
    registers: [reference],
  });
  const samples = [0.0001, 0.0005, 0.004, 0.01, 0.3, 7, 42];
  for (const seconds of samples) {
    http.observe("GET", "/api/items/:id", 200, seconds);
    histogram.observe({ method: "GET", route: "/api/items/:id" }, seconds);
  }
  http.observe("POST", "<unmatched>", 404, 0.002);
  histogram.observe({ method: "POST", route: "<unmatched>" }, 0.002);

  const text = await ours.metrics();
  const expected = await reference.metrics();
  expect(text).toContain(expected.trim());
  expect(text).toContain('http_requests_total{method="GET",route="/api/items/:id",status="200"} 7');
  expect(text).toContain('http_requests_total{method="POST",route="<unmatched>",status="404"} 1');
});
