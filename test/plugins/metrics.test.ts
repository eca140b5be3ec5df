import { afterEach, expect, test } from "bun:test";
import { QUERY_DURATION_BUCKETS } from "../../src/db/timing";
import { listenForMetrics } from "../../src/plugins/metrics/listener";
import { CONTRACT_METRIC_NAMES, METRIC } from "../../src/plugins/metrics/names";
import { buildTestApp, send, serveInProcess, type TestApp } from "../support/app";
import { freePort } from "../support/process";
import { waitFor } from "../support/wait";

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

/** The value of one sample line, or null when the series is absent. */
function sample(text: string, series: string): number | null {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? null : Number(line.slice(series.length + 1));
}

test("unmatched requests are one series, whatever their path", async () => {
  current = buildTestApp();
  for (const path of ["/nope/123", "/nope/456", "/api/nope", "/nope/%41"]) {
    expect((await send(current, path)).status).toBe(404);
  }
  const text = await (await send(current, "/metrics")).text();
  expect(sample(text, 'http_requests_total{method="GET",route="<unmatched>",status="404"}')).toBe(
    4,
  );
  const unmatched = text
    .split("\n")
    .filter((l) => l.startsWith("http_requests_total{") && l.includes("<unmatched>"));
  expect(unmatched).toHaveLength(1);
  expect(text).not.toContain("/nope");
});

test("request durations use an API's buckets: 5 ms to 10 s", async () => {
  current = buildTestApp();
  await send(current, "/health");
  const text = await (await send(current, "/metrics")).text();
  const bounds = text
    .split("\n")
    .filter(
      (l) => l.startsWith("http_request_duration_seconds_bucket{") && l.includes('route="/health"'),
    )
    .map((l) => /le="([^"]+)"/.exec(l)![1]);
  expect(bounds).toEqual([
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.1",
    "0.25",
    "0.5",
    "1",
    "2.5",
    "5",
    "10",
    "+Inf",
  ]);
});

test("every metric a core app registers is spelled as the contract's constant", async () => {
  current = buildTestApp();
  await send(current, "/health");
  const text = await (await send(current, "/metrics")).text();
  const ours = [
    METRIC.httpRequests,
    METRIC.httpRequestDuration,
    METRIC.httpRequestsInFlight,
    METRIC.rateLimitRejections,
    METRIC.rateLimitStoreErrors,
    METRIC.ipBlocksActive,
    METRIC.authFailures,
    METRIC.csrfFailures,
    METRIC.auditEvents,
    METRIC.dbQueryDuration,
  ];
  for (const name of ours) expect(text).toContain(`# TYPE ${name} `);
  expect(new Set(CONTRACT_METRIC_NAMES).size).toBe(CONTRACT_METRIC_NAMES.length);
  for (const name of CONTRACT_METRIC_NAMES) expect(name).toMatch(/^[a-z][a-z0-9_]*$/);
});

test("every contract metric name is spelled once, in names.ts: no source file writes one as a literal", async () => {
  const names = new Set<string>(CONTRACT_METRIC_NAMES);
  const spelled: string[] = [];
  for await (const path of new Bun.Glob("src/**/*.ts").scan()) {
    if (path.endsWith("plugins/metrics/names.ts")) continue;
    const source = await Bun.file(path).text();
    for (const [, literal] of source.matchAll(/["']([a-z][a-z0-9_]*)["']/g)) {
      if (names.has(literal!)) spelled.push(`${path}: "${literal}"`);
    }
  }
  // A quoted literal drifts from the dashboards and alerts on a rename; METRIC.* cannot.
  expect(spelled).toEqual([]);
});

test("http_requests_in_flight counts the requests being answered, from real concurrent requests", async () => {
  current = buildTestApp();
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let entered = 0;
  current.app.get("/slow", async () => {
    entered++;
    await gate;
    return { ok: true };
  });
  const server = serveInProcess(current);
  try {
    const scrape = async () => (await fetch(new URL("/metrics", server.url))).text();
    expect(sample(await scrape(), METRIC.httpRequestsInFlight)).toBe(1); // the scrape itself
    const slow = Array.from({ length: 5 }, () => fetch(new URL("/slow", server.url)));
    await waitFor(() => entered === 5, { what: "five requests in the handler" });
    expect(sample(await scrape(), METRIC.httpRequestsInFlight)).toBe(6);
    release();
    const statuses = await Promise.all(slow.map(async (r) => (await r).status));
    expect(statuses).toEqual([200, 200, 200, 200, 200]);
    await waitFor(async () => sample(await scrape(), METRIC.httpRequestsInFlight) === 1, {
      what: "in-flight back to the scrape alone",
    });
  } finally {
    release();
    await server.shutdown("test");
  }
});

test("db_query_duration_seconds times every statement by operation and schema table, never by SQL text", async () => {
  current = buildTestApp();
  const email = "timed.user@example.test";
  const registered = await send(current, "/api/auth/register", {
    body: { email, password: "correct horse battery staple 42" },
  });
  expect(registered.status).toBe(201);
  const text = await (await send(current, "/metrics")).text();
  const lines = text.split("\n").filter((l) => l.startsWith(`${METRIC.dbQueryDuration}_count{`));
  const labels = lines.map((l) => /\{(.*)\}/.exec(l)![1]!);
  expect(labels).toContain('operation="insert",table="users"');
  expect(labels.some((l) => l.startsWith('operation="select",'))).toBe(true);
  // Statements run directly on the connection (the limiter's raw UPSERT, BEGIN IMMEDIATE) too.
  expect(labels).toContain('operation="insert",table="rate_limit_counters"');
  expect(labels.some((l) => l.startsWith('operation="transaction",'))).toBe(true);
  for (const label of labels) {
    expect(label).toMatch(
      /^operation="(select|insert|update|delete|transaction|other)",table="[a-z_]+"$/,
    );
  }
  expect(sample(text, `${METRIC.dbQueryDuration}_count{operation="insert",table="users"}`)).toBe(1);
  expect(text).toContain(
    `${METRIC.dbQueryDuration}_bucket{le="${QUERY_DURATION_BUCKETS[0]}",operation="insert",table="users"}`,
  );
  expect(text).not.toContain("timed.user");
  expect(text.toLowerCase()).not.toContain("values (");
});

test("with METRICS_PORT, /metrics is served only by the listener, which applies the token too", async () => {
  const port = freePort();
  current = buildTestApp({
    env: { METRICS_PORT: String(port), METRICS_TOKEN: TOKEN },
  });
  const onMain = await send(current, "/metrics", { headers: { authorization: `Bearer ${TOKEN}` } });
  expect(onMain.status).toBe(404);
  expect(((await onMain.json()) as { code: string }).code).toBe("NOT_FOUND");

  const listener = listenForMetrics({
    handle: current.app.handle,
    ...current.config.metricsListener!,
    logger: current.logger,
  });
  try {
    expect(listener.url.toString()).toBe(`http://127.0.0.1:${port}/metrics`);
    const missing = await fetch(listener.url);
    expect(missing.status).toBe(401);
    const scraped = await fetch(listener.url, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(scraped.status).toBe(200);
    const text = await scraped.text();
    expect(sample(text, 'http_requests_total{method="GET",route="/metrics",status="404"}')).toBe(1);
    expect(sample(text, 'http_requests_total{method="GET",route="/metrics",status="401"}')).toBe(1);
    expect((await fetch(new URL("/health", listener.url))).status).toBe(404);
    // The wrong token was charged to the listener's peer, loopback, as a failed login.
    expect(sample(text, 'auth_failures_total{reason="metrics_token"}')).toBe(1);
    // A second listener on the same single port cannot bind it.
    expect(() =>
      listenForMetrics({
        handle: current!.app.handle,
        ...current!.config.metricsListener!,
        logger: current!.logger,
      }),
    ).toThrow(`METRICS_PORT ${port}: no port could be bound`);
  } finally {
    await listener.stop();
  }
});
