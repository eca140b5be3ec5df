/**
 * @module
 * Builds the application from its services. Every request passes the defences in this order:
 *
 *   request id → client address → IP block → rate limit → body-size and request guard →
 *   security headers → CORS → CSRF → auth → validation → handler → audit and metrics
 *
 * The stages before routing read what they need about a route (policy, body limit, probe, CSRF
 * exemption) from one table of route classes, which each module declares next to its routes and
 * which is composed here (`ROUTE_CLASSES`); no stage names a module's path.
 *
 * Auth is per route: each route declares `{ public: true }` or `{ auth: … }` (plugins/auth), and is
 * checked before the body, query and path parameters are validated.
 *
 * Two stages only add response headers — the security headers and the CORS headers of an allowed
 * origin — so they are attached at the very start: every refusal of a later check (403, 429, 413 …)
 * carries them. Their checks (answering a CORS preflight) run at their place in the order.
 *
 * Nothing here is a module-level singleton: a test builds its own app on its own database.
 */
import { Elysia } from "elysia";
import type { Feature } from "./modules/feature";
import { accessLog } from "./plugins/access-log";
import { authPlugin } from "./plugins/auth";
import { createIdentify } from "./plugins/auth/identify";
import { clientIp } from "./plugins/client-ip";
import { corsBarePreflight, corsHeaders, corsPreflight } from "./plugins/cors";
import { crossSiteRequests } from "./plugins/cross-site";
import { createCsrfCheck, csrf } from "./plugins/csrf";
import { errorHandler } from "./plugins/error-handler";
import type { RouteEntry } from "./plugins/error-handler/route-methods";
import { ipBlock } from "./plugins/ip-block";
import { metrics, metricsRouteClasses, registerInFlight } from "./plugins/metrics";
import { metricsListenerPeer } from "./plugins/metrics/listener";
import { DOCS_PATH, openapiDocument, openapiRouteClasses } from "./plugins/openapi";
import { rateLimit } from "./plugins/rate-limit";
import { STEADY_RATE_LIMIT_HEADERS } from "./plugins/rate-limit/headers";
import { requestGuard } from "./plugins/request-guard";
import { realPathFirst } from "./plugins/request-guard/host";
import type { LargeBodyReads } from "./plugins/request-guard/large-bodies";
import { requestId } from "./plugins/request-id";
import { createRouteClassTable, type RouteClass, routeClass } from "./plugins/route-class";
import { securityHeaders, securityResponseHeaders } from "./plugins/security-headers";
import { type RouteBody, strictBody } from "./plugins/strict-body";
import { queryRangeErrors, type RouteQuery, strictQuery } from "./plugins/strict-query";
import type { Services } from "./services";

/** The classes of the routes the app itself serves (the features bring their own). */
export const CORE_ROUTE_CLASSES: readonly RouteClass[] = [
  ...metricsRouteClasses,
  ...openapiRouteClasses,
];

/** Every route class of an app with these features. */
export function routeClassesOf(features: readonly Feature[]): RouteClass[] {
  return [...CORE_ROUTE_CLASSES, ...features.flatMap((feature) => feature.routeClasses)];
}

export interface AppDeps extends Services {
  /** Overrides the socket peer lookup; for tests that call `app.handle` without a server. */
  peerAddress?: (request: Request) => string | null;
  /** Route classes beyond the modules' own (tests that add routes of their own declare them). */
  extraRouteClasses?: readonly RouteClass[];
  /** Write access-log lines in batches (default); tests that read each line at once turn it off. */
  accessLogBuffered?: boolean;
  /** How large bodies are read (request-guard/large-bodies); tests shorten the deadline. */
  largeBodies?: LargeBodyReads;
}

export function createApp(deps: AppDeps) {
  const { config, logger, clock, registry, ipBlocks } = deps;
  const identify = createIdentify(deps.credentials, config.requireTls);
  // One check for the CSRF stage and the rate-limit stage (which asks it of a cookie-only request).
  const csrfCheck = createCsrfCheck({
    secretKey: config.csrf.secretKey,
    previousSecretKey: config.csrf.previousSecretKey,
    requireTls: config.requireTls,
    clock,
  });
  const auth = authPlugin({
    identify,
    metrics: deps.metrics.auth,
    audit: deps.audit,
    standing: deps.standing,
    clock,
  });
  const responseHeaders = securityResponseHeaders({
    hsts: config.requireTls,
    htmlPaths: [DOCS_PATH],
    steady: STEADY_RATE_LIMIT_HEADERS,
  });

  let registeredRoutes: () => readonly RouteEntry[] = () => [];
  let listening: () => Bun.Server<unknown> | null = () => null;
  const app = new Elysia({ name: "palisade" })
    // Before anything reads the path: Elysia slices it from request.url at a fixed offset, which a
    // short or malformed Host shifts (plugins/request-guard/host).
    .wrap(realPathFirst)
    .use(requestId({ secretValues: config.secretValues }))
    .use(
      routeClass({
        table: createRouteClassTable([
          ...routeClassesOf(deps.features),
          ...(deps.extraRouteClasses ?? []),
        ]),
      }),
    )
    .use(
      clientIp({
        trustProxy: config.trustProxy,
        // A scrape the metrics listener hands over comes from that listener's socket.
        peerAddress: (request) => metricsListenerPeer(request) ?? deps.peerAddress?.(request),
        listener: () => listening(),
        onShortChain: ({ hops, entries }) =>
          logger
            .repeating("trust proxy short chain")
            .warn(
              { hops, entries },
              `TRUST_PROXY trusts ${hops} proxy hops, but a request came through ${entries}: with more hops than proxies, a client that sends its own X-Forwarded-For chooses its address; set TRUST_PROXY to the number of proxies in front of the service, or their CIDRs`,
            ),
      }),
    )
    .use(securityHeaders(responseHeaders))
    .use(corsHeaders({ allowedOrigins: config.cors.allowedOrigins }))
    .use(ipBlock({ service: ipBlocks, clock }))
    // Browser requests answered or refused before they are counted: another site's page's
    // requests (refused), an allowed origin's preflights (answered).
    .use(crossSiteRequests({ allowedOrigins: config.cors.allowedOrigins }))
    .use(
      corsPreflight({
        allowedOrigins: config.cors.allowedOrigins,
        allowedHosts: config.allowedHosts,
      }),
    )
    .use(
      rateLimit({
        enforce: deps.enforceLimits,
        policies: deps.policies,
        allowCidrs: config.rateLimit.allowCidrs,
        identify,
        lockedOutUntil: (principal) => ipBlocks.blockedUntil(principal),
        metrics: deps.metrics.rateLimit,
        cookieProven: (request) => csrfCheck(request) === null,
        now: () => clock.now(),
      }),
    )
    .use(
      requestGuard({
        bodyLimits: config.bodyLimits,
        audit: deps.audit,
        allowedHosts: config.allowedHosts,
        routes: () => registeredRoutes() as readonly RouteBody[],
        now: () => clock.now(),
        largeBodies: deps.largeBodies,
        rateLimitMetrics: deps.metrics.rateLimit,
      }),
    )
    .use(corsBarePreflight())
    .use(
      csrf({
        check: csrfCheck,
        clock,
        audit: deps.audit,
        metrics: deps.metrics.csrf,
      }),
    )
    .use(
      errorHandler({
        logger,
        routes: () => registeredRoutes(),
        report: (error, context) => deps.errors.report(error, context),
        responseHeaders,
        queryRangeErrors: queryRangeErrors(() => registeredRoutes() as readonly RouteQuery[]),
      }),
    )
    .use(
      accessLog({
        logger,
        http: deps.metrics.http,
        secretValues: config.secretValues,
        buffered: deps.accessLogBuffered,
        routes: () => registeredRoutes(),
        trace: deps.errors.tracing ? (trace) => deps.errors.traceRequest(trace) : undefined,
      }),
    )
    .use(auth)
    .use(strictBody())
    .use(strictQuery({ routes: () => registeredRoutes() as readonly RouteQuery[] }))
    .use(openapiDocument({ docsPage: config.docsPage, public: config.openapiPublic, auth }))
    .use(
      metrics({
        registry,
        token: config.metricsToken,
        identify,
        auth,
        ownListener: config.metricsListener !== null,
        onAuthFailure: ({ client, requestId }) => {
          deps.metrics.auth.fail("metrics_token");
          return ipBlocks.recordViolation("login", client, requestId);
        },
        onRefused: (reason) => deps.metrics.auth.fail(reason),
      }),
    )
    // The features' modules, in the order of the feature list.
    .use(
      deps.features.reduce(
        (modules, feature) => modules.use(feature.routes({ auth, readiness: deps.readiness })),
        new Elysia(),
      ),
    );
  registeredRoutes = () => app.routes;
  listening = () => app.server;
  registerInFlight(registry, () => app.server);
  return app;
}

export type App = ReturnType<typeof createApp>;
