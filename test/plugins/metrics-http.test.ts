import { expect, test } from "bun:test";
import { Histogram, Registry } from "prom-client";
import { createHttpMetrics, DURATION_BUCKETS } from "../../src/plugins/metrics/http";

test("the request metrics render exactly as prom-client's own counter and histogram would", async () => {
  const ours = new Registry();
  const http = createHttpMetrics(ours);
  const reference = new Registry();
  const histogram = new Histogram({
    name: "http_request_duration_seconds",
    help: "Time from receiving a request to sending its response, less the time its body took to arrive",
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

test("after a reset, counts start again and every series is rendered, none left behind", async () => {
  const registry = new Registry();
  const http = createHttpMetrics(registry);
  http.observe("GET", "/a", 200, 0.001);
  http.observe("GET", "/a", 500, 0.2);
  http.observe("POST", "/a", 200, 0.001);
  http.observe("GET", "/b", 200, 3);
  registry.resetMetrics();
  expect(await registry.metrics()).not.toContain('route="/a"');
  http.observe("GET", "/a", 200, 0.001);
  http.observe("GET", "/a", 200, 0.001);
  http.observe("GET", "/b", 404, 0.001);
  const text = await registry.metrics();
  expect(text).toContain('http_requests_total{method="GET",route="/a",status="200"} 2');
  expect(text).toContain('http_requests_total{method="GET",route="/b",status="404"} 1');
  expect(text).not.toContain('status="500"');
  expect(text).not.toContain('method="POST"');
  expect(text).toContain('http_request_duration_seconds_count{method="GET",route="/a"} 2');
  expect(text).toContain('http_request_duration_seconds_count{method="GET",route="/b"} 1');
});

test("each method, route and status is counted in its own series", async () => {
  const registry = new Registry();
  const http = createHttpMetrics(registry);
  const combos: [string, string, number][] = [
    ["GET", "/a", 200],
    ["GET", "/a", 404],
    ["POST", "/a", 200],
    ["GET", "/b", 200],
    ["OTHER", "<unmatched>", 405],
  ];
  combos.forEach(([method, route, status], index) => {
    for (let i = 0; i <= index; i++) http.observe(method, route, status, 0.001);
  });
  const text = await registry.metrics();
  combos.forEach(([method, route, status], index) => {
    expect(text).toContain(
      `http_requests_total{method="${method}",route="${route}",status="${status}"} ${index + 1}`,
    );
  });
});
