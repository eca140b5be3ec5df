import { afterEach, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const TOKEN = "metrics-token-0123456789-abcdefghijklmnop";

test("GET /metrics exports request metrics by route pattern, never the raw path", async () => {
  current = buildTestApp();
  const app = current.app.get("/api/items/:id", ({ params }) => ({ id: params.id }));
  await send({ app }, "/api/items/123");
  await send({ app }, "/api/items/456");
  await send({ app }, "/no/such/path");
  const response = await send({ app }, "/metrics");
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toContain("text/plain");
  const text = await response.text();
  expect(text).toContain('http_requests_total{method="GET",route="/api/items/:id",status="200"} 2');
  expect(text).toContain('http_requests_total{method="GET",route="<unmatched>",status="404"} 1');
  expect(text).not.toContain("/api/items/123");
  expect(text).not.toContain("/no/such/path");
  expect(text).toContain(
    'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/items/:id"}',
  );
  expect(text).toContain("process_cpu_seconds_total");
  expect(text).toContain("ip_blocks_active 0");
});

test("with METRICS_TOKEN set, /metrics needs the bearer token", async () => {
  current = buildTestApp({ env: { METRICS_TOKEN: TOKEN } });
  const missing = await send(current, "/metrics");
  expect(missing.status).toBe(401);
  expect(missing.headers.get("www-authenticate")).toBe('Bearer realm="metrics"');
  expect(((await missing.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
  const wrong = await send(current, "/metrics", { headers: { authorization: `Bearer ${TOKEN}x` } });
  expect(wrong.status).toBe(401);
  const right = await send(current, "/metrics", { headers: { authorization: `Bearer ${TOKEN}` } });
  expect(right.status).toBe(200);
  // The token never appears in what the app logs.
  expect(current.logs.text).not.toContain(TOKEN);
});
