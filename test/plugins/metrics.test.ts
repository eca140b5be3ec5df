import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { QUERY_DURATION_BUCKETS } from "../../src/db/timing";
import { listenForMetrics } from "../../src/plugins/metrics/listener";
import { CONTRACT_METRIC_NAMES, METRIC } from "../../src/plugins/metrics/names";
import { API_CSP, buildSecurityHeaders } from "../../src/plugins/security-headers";
import { buildTestApp, send, serveInProcess, type TestApp } from "../support/app";
import { bearer, createKey, signUp } from "../support/auth";
import { freePort, REPO_ROOT } from "../support/process";
import { rawHttp } from "../support/raw-http";
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

test("with METRICS_TOKEN set, only a presented credential that is wrong counts against the address; none is 401 and a valid one without the scope 403, never blocking (probe 15b, finding 3)", async () => {
  current = buildTestApp({ env: { METRICS_TOKEN: TOKEN } });
  const alice = await signUp(current);
  const admin = await signUp(current, { role: "admin" });
  const chatKey = createKey(current, ["chat"]).key;
  const adminKey = createKey(current, ["admin"]).key;
  const metricsKey = createKey(current, ["metrics"]).key;
  const revoked = createKey(current, ["metrics"]);
  current.services.apiKeys.revoke(revoked.record.id, null);
  const scrape = (headers: Record<string, string>, peer: string) =>
    send(current!, "/metrics", { headers, peer });
  const blocked = async (peer: string) =>
    (await send(current!, "/openapi.json", { peer })).status === 403;

  // Twelve of each, from its own address: more than the ten failures that block.
  const uncounted: Array<[string, Record<string, string>, number]> = [
    ["no credential", {}, 401],
    ["a user's access token", bearer(alice.accessToken), 403],
    ["an admin's access token", bearer(admin.accessToken), 403],
    ["a chat key", { "x-api-key": chatKey }, 403],
    ["an admin key, as a bearer", bearer(adminKey), 403],
    // Verifies, but no longer holds: a Prometheus still holding a revoked key guesses nothing
    // (re-probe 15c F2).
    ["a revoked metrics key", { "x-api-key": revoked.key }, 401],
  ];
  for (const [index, [label, headers, status]] of uncounted.entries()) {
    const peer = `198.51.100.${index + 1}`;
    for (let i = 0; i < 12; i++) {
      const response = await scrape(headers, peer);
      expect({ label, status: response.status }).toEqual({ label, status });
    }
    expect({ label, blocked: await blocked(peer) }).toEqual({ label, blocked: false });
  }
  // A wrong token, an unknown key, a malformed bearer: guesses, counted; the tenth blocks.
  const wrong: Array<[string, Record<string, string>]> = [
    ["a wrong token", { authorization: `Bearer ${TOKEN}x` }],
    ["an unknown key", { "x-api-key": `${metricsKey.slice(0, -4)}0000` }],
    ["not a bearer credential", { authorization: `Basic ${btoa(`x:${TOKEN}`)}` }],
  ];
  for (const [index, [label, headers]] of wrong.entries()) {
    const peer = `203.0.113.${index + 1}`;
    for (let i = 0; i < 10; i++) await scrape(headers, peer);
    expect({ label, blocked: await blocked(peer) }).toEqual({ label, blocked: true });
  }
  // The token in any case of its scheme (RFC 9110: schemes are case-insensitive), and the key.
  for (const headers of <Record<string, string>[]>[
    { authorization: `bearer ${TOKEN}` },
    { authorization: `BEARER ${TOKEN}` },
    { "x-api-key": metricsKey },
  ]) {
    expect((await scrape(headers, "192.0.2.200")).status).toBe(200);
  }
});

test("a refused scrape is counted in auth_failures_total under the reason any route counts it by: none, revoked, without the scope, a guess (probe 85f F6)", async () => {
  current = buildTestApp({ env: { METRICS_TOKEN: TOKEN } });
  const alice = await signUp(current);
  const chatKey = createKey(current, ["chat"]).key;
  const revoked = createKey(current, ["metrics"]);
  current.services.apiKeys.revoke(revoked.record.id, null);
  const cases: Array<[Record<string, string>, number]> = [
    [{}, 401],
    [bearer(alice.accessToken), 403],
    [{ "x-api-key": chatKey }, 403],
    [{ "x-api-key": revoked.key }, 401],
    [{ authorization: `Bearer ${TOKEN}x` }, 401],
  ];
  for (const [headers, status] of cases) {
    expect((await send(current, "/metrics", { headers, peer: "198.51.100.9" })).status).toBe(
      status,
    );
  }
  const text = await (
    await send(current, "/metrics", { headers: { authorization: `Bearer ${TOKEN}` } })
  ).text();
  const failures = (reason: string) => sample(text, `auth_failures_total{reason="${reason}"}`);
  expect({
    missing: failures("missing_credentials"),
    forbidden: failures("forbidden"),
    revoked: failures("revoked_api_key"),
    guessed: failures("metrics_token"),
  }).toEqual({ missing: 1, forbidden: 2, revoked: 1, guessed: 1 });
});

test("a bootstrap metrics key of any spelling scrapes as a bearer, as Prometheus sends it: 200 every time, the address never blocked (probe 38c F2)", async () => {
  const scraper = "scrape-key-0123456789-abcdef";
  // Outside a token's alphabet, a space inside: API_KEYS takes it, so a bearer does (probe 39b F1).
  const symbols = "scrape!key#0123$ab cd";
  current = buildTestApp({
    env: { METRICS_TOKEN: TOKEN, API_KEYS: `${scraper}:metrics,${symbols}:metrics` },
  });
  const peer = "198.51.100.60";
  for (let i = 0; i < 12; i++) {
    for (const key of [scraper, symbols]) {
      const answer = await send(current, "/metrics", { headers: bearer(key), peer });
      expect({ key, i, status: answer.status }).toEqual({ key, i, status: 200 });
    }
  }
  expect(current.services.ipBlocks.listActive()).toEqual([]);
  // The same key as X-API-Key, and as a bearer anywhere else a key is taken.
  expect(
    (await send(current, "/metrics", { headers: { "x-api-key": scraper }, peer })).status,
  ).toBe(200);
  const me = await send(current, "/api/auth/me", { headers: bearer(scraper), peer });
  expect(me.status).toBe(200);
  expect(((await me.json()) as { scopes: string[] }).scopes).toEqual(["metrics"]);
});

/** The value of one sample line, or null when the series is absent. */ /** The value of one sample line, or null when the series is absent. */
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
    METRIC.dbWalSize,
    METRIC.dbWalTruncateCheckpoints,
  ];
  for (const name of ours) expect(text).toContain(`# TYPE ${name} `);
  expect(new Set(CONTRACT_METRIC_NAMES).size).toBe(CONTRACT_METRIC_NAMES.length);
  for (const name of CONTRACT_METRIC_NAMES) expect(name).toMatch(/^[a-z][a-z0-9_]*$/);
});

test("db_wal_size_bytes is the -wal file's size at the scrape; the WAL guard's TRUNCATE checkpoints start at 0 (probe 46c F1)", async () => {
  current = buildTestApp();
  // Some writes on the app's own file, as the service makes.
  current.db.$client.run("CREATE TABLE filler (data BLOB)");
  const insert = current.db.$client.prepare("INSERT INTO filler VALUES (randomblob(4000))");
  for (let i = 0; i < 50; i++) insert.run();
  const text = await (await send(current, "/metrics")).text();
  // Read after the scrape: the scrape's own request writes (its limiter row) before it is answered.
  const walBytes = statSync(`${current.databasePath}-wal`).size;
  expect(walBytes).toBeGreaterThan(50 * 4000);
  expect(text.split("\n")).toContain(`${METRIC.dbWalSize} ${walBytes}`);
  expect(text).toContain(`${METRIC.dbWalTruncateCheckpoints}{outcome="truncated"} 0`);
  expect(text).toContain(`${METRIC.dbWalTruncateCheckpoints}{outcome="busy"} 0`);
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

test('a wait for another process\'s write lock shows under operation="transaction", whichever way the transaction was begun', async () => {
  current = buildTestApp();
  const app = current;
  const sqlite = app.db.$client;
  sqlite.run("PRAGMA busy_timeout = 600");
  const waits = async () => {
    const text = await (await send(app, "/metrics")).text();
    const labels = 'operation="transaction",table="other"';
    const exported = (series: string) => {
      const value = sample(text, series);
      if (value === null) throw new Error(`${series} is not exported`);
      return value;
    };
    return (
      exported(`${METRIC.dbQueryDuration}_count{${labels}}`) -
      exported(`${METRIC.dbQueryDuration}_bucket{le="0.5",${labels}}`)
    );
  };
  const before = await waits();
  const locker = new Database(app.databasePath);
  locker.run("BEGIN IMMEDIATE");
  try {
    // bun:sqlite's transaction() (what Drizzle's and the services' transactions use), and Drizzle's.
    expect(() => sqlite.transaction(() => sqlite.run("SELECT 1")).immediate()).toThrow("locked");
    expect(() => app.db.transaction(() => undefined, { behavior: "immediate" })).toThrow();
  } finally {
    locker.run("ROLLBACK");
    locker.close();
  }
  expect((await waits()) - before).toBe(2);
  // Nesting and rollback are as bun:sqlite's own: the inner call is a savepoint, undone alone.
  sqlite.run("CREATE TABLE timed_nesting (n INTEGER)");
  sqlite
    .transaction(() => {
      sqlite.run("INSERT INTO timed_nesting VALUES (1)");
      expect(() =>
        sqlite.transaction(() => {
          sqlite.run("INSERT INTO timed_nesting VALUES (2)");
          throw new Error("inner");
        })(),
      ).toThrow("inner");
    })
    .immediate();
  expect(sqlite.query("SELECT n FROM timed_nesting").values()).toEqual([[1]]);
  expect(sqlite.inTransaction).toBe(false);
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
    hsts: false,
  });
  try {
    expect(listener.url.toString()).toBe(`http://127.0.0.1:${port}/metrics`);
    const missing = await fetch(listener.url);
    expect(missing.status).toBe(401);
    const wrong = await fetch(listener.url, { headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.status).toBe(401);
    const scraped = await fetch(listener.url, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(scraped.status).toBe(200);
    const text = await scraped.text();
    expect(sample(text, 'http_requests_total{method="GET",route="/metrics",status="404"}')).toBe(1);
    expect(sample(text, 'http_requests_total{method="GET",route="/metrics",status="401"}')).toBe(2);
    const elsewhere = await fetch(new URL("/health", listener.url));
    expect(elsewhere.status).toBe(404);
    // With the security headers every answer carries: it sent only nosniff and no-store (probe
    // 71b F3).
    for (const [name, value] of Object.entries(buildSecurityHeaders(false, API_CSP))) {
      expect([name, elsewhere.headers.get(name)]).toEqual([name, value]);
    }
    expect(elsewhere.headers.get("vary")).toBe("Origin");
    // With a trailing slash as on the main port, where the router takes it for the same route.
    const slashed = await fetch(new URL("/metrics/", listener.url), {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(slashed.status).toBe(200);
    // The wrong token (not the missing one) was charged to the listener's peer, loopback, as a
    // failed login.
    expect(sample(text, 'auth_failures_total{reason="metrics_token"}')).toBe(1);
    // A second listener on the same single port cannot bind it.
    expect(() =>
      listenForMetrics({
        handle: current!.app.handle,
        ...current!.config.metricsListener!,
        logger: current!.logger,
        hsts: false,
      }),
    ).toThrow(`METRICS_PORT ${port}: no port could be bound`);
  } finally {
    await listener.stop();
  }
});

/** What Bun's development error page would show: source paths, source lines, a stack. */
function expectNoErrorPage(text: string) {
  expect(text).not.toContain(REPO_ROOT);
  expect(text).not.toContain("listener.ts");
  expect(text).not.toContain("    at ");
  expect(text).not.toContain("<!DOCTYPE");
}

test("the metrics listener hands every /metrics request to the app whatever its Host: malformed or empty is 400 problem+json, never a Bun error page", async () => {
  const port = freePort();
  current = buildTestApp({ env: { METRICS_PORT: String(port), METRICS_TOKEN: TOKEN } });
  const listener = listenForMetrics({
    handle: current.app.handle,
    ...current.config.metricsListener!,
    logger: current.logger,
    hsts: false,
  });
  try {
    for (const [request, code] of [
      ["GET /metrics HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n", "BAD_HEADER"],
      ["GET /metrics HTTP/1.1\r\nHost: user@host\r\nConnection: close\r\n\r\n", "BAD_HEADER"],
      ["GET /metrics HTTP/1.0\r\nHost: \r\n\r\n", "BAD_HEADER"],
      [
        "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",
        "DUPLICATE_HEADER",
      ],
    ]) {
      const response = await rawHttp(port, request!);
      expectNoErrorPage(response.text);
      expect(response.status).toBe(400);
      expect(response.headers["content-type"]).toBe("application/problem+json");
      expect(JSON.parse(response.body).code).toBe(code);
    }
    // HTTP/1.0 may omit Host: the app answers it as any scrape (here: the token is missing).
    const noHost = await rawHttp(port, "GET /metrics HTTP/1.0\r\n\r\n");
    expectNoErrorPage(noHost.text);
    expect(noHost.status).toBe(401);
    expect(JSON.parse(noHost.body).code).toBe("UNAUTHENTICATED");
    // Any other path, whatever the Host, is 404 problem+json from the listener (a bare path that
    // Elysia's fixed offset would slice to /metrics included).
    for (const request of [
      "GET /health HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
      "GET /zz/metrics HTTP/1.0\r\n\r\n",
      "GET /api/auth/me HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ]) {
      const response = await rawHttp(port, request);
      expectNoErrorPage(response.text);
      expect(response.status).toBe(404);
      expect(response.headers["content-type"]).toBe("application/problem+json");
      expect(JSON.parse(response.body).code).toBe("NOT_FOUND");
      expect(response.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
    }
    // The refusals went through the app: counted under the route and logged.
    const text = await (
      await fetch(listener.url, { headers: { authorization: `Bearer ${TOKEN}` } })
    ).text();
    expect(sample(text, 'http_requests_total{method="GET",route="/metrics",status="400"}')).toBe(4);
    expect(sample(text, 'http_requests_total{method="GET",route="/metrics",status="401"}')).toBe(1);
  } finally {
    await listener.stop();
  }
});

test("whatever escapes the app on the metrics listener is a bare problem+json 500, never Bun's error page", async () => {
  const port = freePort();
  current = buildTestApp();
  const listener = listenForMetrics({
    handle: (request) => {
      if (request.headers.get("x-fail") === "async") {
        return Promise.reject(new Error(`async failure in ${REPO_ROOT}/src/secret-place.ts`));
      }
      throw new Error(`failure in ${REPO_ROOT}/src/secret-place.ts`);
    },
    host: "127.0.0.1",
    ports: { first: port, last: port },
    logger: current.logger,
    hsts: true,
  });
  try {
    for (const fail of ["sync", "async"]) {
      const response = await rawHttp(
        port,
        `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fail: ${fail}\r\nConnection: close\r\n\r\n`,
      );
      expectNoErrorPage(response.text);
      expect(response.text).not.toContain("secret-place");
      expect(response.status).toBe(500);
      expect(response.headers["content-type"]).toBe("application/problem+json");
      expect(JSON.parse(response.body).code).toBe("INTERNAL");
      // The security headers every answer carries, HSTS where asked (probe 71b F3).
      for (const [name, value] of Object.entries(buildSecurityHeaders(true, API_CSP))) {
        expect([name, response.headers[name]]).toEqual([name, value]);
      }
      // The operator still has the error, in the log, under the request id the client got.
      const requestId = response.headers["x-request-id"];
      const logged = current.logs.entries.find((entry) => entry.requestId === requestId);
      expect(logged?.msg).toBe("request failed outside the app");
    }
  } finally {
    await listener.stop();
  }
});

describe("the route label of requests refused before routing", () => {
  test("a 429 from the limiter is counted, logged and timed under the route it was aimed at", async () => {
    current = buildTestApp({ env: { RATE_LIMIT_LOGIN: "1" } });
    const body = { email: "someone@example.com", password: "not-the-password-123" };
    expect((await send(current, "/api/auth/login", { body })).status).toBe(401);
    expect((await send(current, "/api/auth/login", { body })).status).toBe(429);
    const text = await (await send(current, "/metrics")).text();
    expect(
      sample(text, 'http_requests_total{method="POST",route="/api/auth/login",status="429"}'),
    ).toBe(1);
    expect(text).not.toContain('route="<unmatched>",status="429"');
    expect(text).toContain(
      'http_request_duration_seconds_count{method="POST",route="/api/auth/login"} 2',
    );
    const refused = current.logs.entries.find((e) => e.msg === "request" && e.status === 429);
    expect(refused?.route).toBe("/api/auth/login");
  });

  test("IP_BLOCKED, the request guard and CSRF refusals carry the route pattern (with its parameters), a path that matches no route stays <unmatched>", async () => {
    current = buildTestApp();
    const payment = "/api/payments/pay_123";
    // Request guard: a URL over the limit on a parameterised route, a body over the limit.
    const long = await send(current, `${payment}?q=${"a".repeat(20_000)}`);
    const big = await send(current, "/api/payments/intents", {
      body: "{}",
      headers: { "content-length": String(10 * 1024 * 1024) },
    });
    // CSRF: a cookie-authenticated POST without the token.
    const csrfRefused = await send(current, "/api/auth/logout", {
      body: {},
      headers: { cookie: "palisade_session=abc", origin: "http://localhost" },
    });
    current.services.ipBlocks.block({
      address: "203.0.113.9",
      reason: "test",
      ttlMs: 60_000,
      source: "admin",
    });
    const blocked = await send(current, "/openapi.json", { peer: "203.0.113.9" });
    const blockedUnknown = await send(current, "/no/such/route", { peer: "203.0.113.9" });
    // HEAD is answered by the GET route; a method no route has on the path is unmatched.
    const blockedHead = await send(current, "/openapi.json", {
      peer: "203.0.113.9",
      method: "HEAD",
    });
    const blockedWrongMethod = await send(current, "/openapi.json", {
      peer: "203.0.113.9",
      method: "DELETE",
    });
    expect(blocked.status).toBe(403);
    expect(((await blocked.json()) as { code: string }).code).toBe("IP_BLOCKED");
    const text = await (await send(current, "/metrics")).text();
    expect(long.status).toBe(414);
    expect(
      sample(text, 'http_requests_total{method="GET",route="/api/payments/:id",status="414"}'),
    ).toBe(1);
    expect(big.status).toBe(413);
    expect(
      sample(text, 'http_requests_total{method="POST",route="/api/payments/intents",status="413"}'),
    ).toBe(1);
    expect(csrfRefused.status).toBe(403);
    expect(((await csrfRefused.json()) as { code: string }).code).toStartWith("CSRF");
    expect(
      sample(text, 'http_requests_total{method="POST",route="/api/auth/logout",status="403"}'),
    ).toBe(1);
    expect(
      sample(text, 'http_requests_total{method="GET",route="/openapi.json",status="403"}'),
    ).toBe(1);
    expect(
      sample(text, 'http_requests_total{method="HEAD",route="/openapi.json",status="403"}'),
    ).toBe(1);
    expect(blockedUnknown.status).toBe(403);
    expect(blockedHead.status).toBe(403);
    expect(blockedWrongMethod.status).toBe(403);
    expect(sample(text, 'http_requests_total{method="GET",route="<unmatched>",status="403"}')).toBe(
      1,
    );
    expect(
      sample(text, 'http_requests_total{method="DELETE",route="<unmatched>",status="403"}'),
    ).toBe(1);
    expect(text).not.toContain("pay_123");
  });
});

test("scrapes have a limit of their own: the scraper's host spending its default budget leaves them, and refused scrapes never block the address (probe 35a F1)", async () => {
  current = buildTestApp({ env: { METRICS_TOKEN: TOKEN, RATE_LIMIT_METRICS: "5" } });
  const prometheus = "192.0.2.90";
  const scrape = () => send(current!, "/metrics", { headers: bearer(TOKEN), peer: prometheus });
  // An operator on the monitoring host spends its address's whole default burst (20).
  for (let i = 0; i < 20; i++) {
    expect((await send(current, "/api/auth/csrf", { peer: prometheus })).status).toBe(200);
  }
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) statuses.push((await scrape()).status);
  expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
  // Seven refusals, five to a block by default: none of them was a violation.
  expect(current.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 0 });
  expect((await send(current, "/api/auth/csrf", { peer: prometheus })).status).toBe(429);
});
