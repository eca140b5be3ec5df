/**
 * Each defence's cost in µs per request, measured in process: the same JSON route is served by
 * apps that add one stage at a time, and each stage's cost is the difference from the app before it.
 */
import { Elysia } from "elysia";
import { accessLog } from "../src/plugins/access-log";
import { clientIp } from "../src/plugins/client-ip";
import { corsHeaders, corsPreflight } from "../src/plugins/cors";
import { createCsrfCheck, csrf } from "../src/plugins/csrf";
import { errorHandler } from "../src/plugins/error-handler";
import { ipBlock } from "../src/plugins/ip-block";
import { rateLimit } from "../src/plugins/rate-limit";
import { requestGuard } from "../src/plugins/request-guard";
import { requestId } from "../src/plugins/request-id";
import { createRouteClassTable, routeClass } from "../src/plugins/route-class";
import { securityHeaders, securityResponseHeaders } from "../src/plugins/security-headers";
import { settleDeferredWork } from "./deferred";
import { benchServices } from "./services";

// biome-ignore lint/suspicious/noExplicitAny: stages are composed dynamically; each adds its own decorators.
type AnyApp = Elysia<any, any, any, any, any, any, any>;
type Stage = { name: string; add: (app: AnyApp) => AnyApp };

const payload = { id: 42, name: "palisade", tags: ["a", "b"], ok: true };

export async function measureChain(dir: string, requests: number, concurrency: number, rounds = 3) {
  const bench = benchServices({
    databasePath: `${dir}/chain.db`,
    env: { RATE_LIMIT_PER_MINUTE: "1000000", RATE_LIMIT_BURST: "1000000" },
    level: "info",
    logs: "fd",
  });
  const { config, logger, services: s } = bench;
  const peer = () => "127.0.0.1";

  const stages: Stage[] = [
    { name: "request id", add: (a) => a.use(requestId()) },
    {
      name: "route class",
      add: (a) => a.use(routeClass({ table: createRouteClassTable([{ routes: ["GET /bench"] }]) })),
    },
    {
      name: "client address",
      add: (a) => a.use(clientIp({ trustProxy: config.trustProxy, peerAddress: peer })),
    },
    {
      name: "security headers",
      add: (a) => a.use(securityHeaders(securityResponseHeaders({ hsts: false }))),
    },
    {
      name: "CORS",
      add: (a) =>
        a
          .use(corsHeaders({ allowedOrigins: config.cors.allowedOrigins }))
          .use(corsPreflight({ allowedOrigins: config.cors.allowedOrigins })),
    },
    { name: "IP block", add: (a) => a.use(ipBlock({ service: s.ipBlocks, clock: s.clock })) },
    {
      name: "rate limit (SQLite)",
      add: (a) =>
        a.use(rateLimit({ enforce: s.enforceLimits, policies: s.policies, allowCidrs: [] })),
    },
    {
      name: "request guard",
      add: (a) => a.use(requestGuard({ bodyLimits: config.bodyLimits, audit: s.audit })),
    },
    {
      name: "CSRF",
      add: (a) =>
        a.use(
          csrf({
            check: createCsrfCheck({
              secretKey: config.csrf.secretKey,
              requireTls: false,
              clock: s.clock,
            }),
            clock: s.clock,
            audit: s.audit,
            metrics: s.metrics.csrf,
          }),
        ),
    },
    {
      name: "errors + access log + request metrics",
      add: (a) =>
        a
          .use(errorHandler({ logger, routes: () => [] }))
          .use(accessLog({ logger, http: s.metrics.http, secretValues: config.secretValues })),
    },
  ];

  const timeApp = async (app: AnyApp): Promise<number> => {
    const handle = app.handle.bind(app);
    const url = "http://localhost/bench";
    // Warm up: JIT and Elysia's compiled handler (the quick run's short runs warm up less).
    for (let i = 0; i < Math.min(2_000, requests); i++) await handle(new Request(url));
    await settleDeferredWork();
    const started = performance.now();
    let sent = 0;
    const worker = async () => {
      while (sent < requests) {
        sent++;
        const response = await handle(new Request(url, { headers: { "user-agent": "bench" } }));
        if (response.status !== 200) throw new Error(`status ${response.status}`);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    await settleDeferredWork();
    return ((performance.now() - started) * 1000) / requests;
  };

  const build = (count: number) => {
    let app: AnyApp = new Elysia();
    for (const stage of stages.slice(0, count)) app = stage.add(app);
    return app.get("/bench", () => payload);
  };

  const rows: { stage: string; usPerRequest: number }[] = [];
  // Best of the rounds per app: the machine is noisy and the minimum is the steadiest estimate.
  const best = async (count: number) => {
    let min = Number.POSITIVE_INFINITY;
    for (let round = 0; round < rounds; round++) min = Math.min(min, await timeApp(build(count)));
    return min;
  };
  const bare = await best(0);
  let previous = bare;
  for (let i = 1; i <= stages.length; i++) {
    const total = await best(i);
    rows.push({ stage: stages[i - 1]!.name, usPerRequest: total - previous });
    previous = total;
  }
  bench.close();
  return { bareUs: bare, fullUs: previous, rows };
}
