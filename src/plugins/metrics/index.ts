/**
 * @module
 * `GET /metrics` in Prometheus text format. When METRICS_TOKEN is set it needs
 * `Authorization: Bearer METRICS_TOKEN`, or an API key holding the `metrics` scope; it is declared
 * public to the auth stage because it checks its own credential (a scraper's token is not a user's).
 * The request metrics are counted by the access-log stage (one hook for both); their `route` label
 * is the route pattern or `<unmatched>`, and their method label a standard method or OTHER, so a
 * scanner cannot grow the label sets.
 *
 * A wrong token is a violation of the client's address (as a failed login is), the route is rate
 * limited per address, and a blocked address is refused before its token is looked at. No
 * credential, or a revoked or expired one, is 401 and a valid one without the scope 403, none of
 * them a violation: none guesses (each is counted in `auth_failures_total`, as on any route).
 *
 * With METRICS_PORT the route answers only what the metrics listener hands over (listener.ts);
 * on the main port it is 404, as if it did not exist.
 */
import { Elysia, t } from "elysia";
import { AppError, problemResponses } from "../../errors";
import type { authPlugin } from "../auth";
import { bearerCredential, type Identify } from "../auth/identify";
import type { AuthFailureReason } from "../auth/metrics";
import type { ResolvedClient } from "../client-ip";
import { constantTimeEqual } from "../csrf/token";
import type { RouteClass } from "../route-class";
import { viaMetricsListener } from "./listener";
import { METRIC } from "./names";
import { Gauge, type Registry } from "./prom";

export interface MetricsOptions {
  registry: Registry;
  token: string | null;
  /** The request's credential, as the rest of the app reads it (plugins/auth/identify). */
  identify: Identify;
  auth: ReturnType<typeof authPlugin>;
  /**
   * A credential presented that is neither the token nor one that verifies (unknown, malformed, a
   * bad signature): counted as a violation of the client's address, like a bad login. No credential
   * at all, a revoked or expired one, or a valid one without the `metrics` scope guesses nothing and
   * is not counted (an uptime check, a Prometheus missing its `credentials_file` or holding a
   * revoked key, an admin's own key must not block their address).
   */
  onAuthFailure?: (failure: { client: ResolvedClient; requestId: string }) => unknown;
  /**
   * Every other refusal, by the reason the auth stage counts it under on any route (no credential,
   * revoked or expired, without the scope), so `auth_failures_total` sees a scraper's broken
   * credential as it sees a user's (probe 85f F6).
   */
  onRefused?: (reason: AuthFailureReason) => unknown;
  /** `/metrics` is served by a listener of its own (METRICS_PORT): 404 on the main port. */
  ownListener?: boolean;
}

/**
 * /metrics is limited per address (`RATE_LIMIT_METRICS`) and not a probe: it checks a token, so it
 * must not be an unthrottled guessing oracle, even from a blocked address.
 */
export const metricsRouteClasses: readonly RouteClass[] = [
  { routes: ["GET /metrics"], policy: "metrics" },
];

/**
 * `http_requests_in_flight`: what Bun's server counts as accepted and not yet answered (a streamed
 * response until its last byte), read when scraped. Taken from the server rather than counted in
 * hooks, so a request that is cut off or fails before any hook runs can never leave it off by
 * one. A scrape on the main port counts itself.
 */
export function registerInFlight(registry: Registry, server: () => Bun.Server<unknown> | null) {
  new Gauge({
    name: METRIC.httpRequestsInFlight,
    help: "HTTP requests received and not yet answered by this process",
    registers: [registry],
    collect() {
      this.set(server()?.pendingRequests ?? 0);
    },
  });
}

/**
 * Who may read `/metrics`: the token, a key with the `metrics` scope; and what the others sent. A
 * credential that verifies but is revoked or expired (a Prometheus still holding a revoked key, a
 * browser's old session) is `stale`: refused, but no guess at anything.
 */
const ALLOWED = { verdict: "allowed" } as const;

type MetricsAccess =
  | { verdict: "allowed" | "wrong" }
  | { verdict: "refused" | "not_permitted"; reason: AuthFailureReason };

export function metrics(options: MetricsOptions) {
  const {
    registry,
    token,
    identify,
    auth,
    onAuthFailure,
    onRefused,
    ownListener = false,
  } = options;

  const access = async (request: Request): Promise<MetricsAccess> => {
    if (token === null) return ALLOWED;
    const presented = bearerCredential(request.headers.get("authorization"));
    if (presented !== null && constantTimeEqual(presented, token)) return ALLOWED;
    const identification = await identify(request);
    if (identification.status === "none") {
      return { verdict: "refused", reason: "missing_credentials" };
    }
    if (identification.status === "bad") {
      return identification.reason.startsWith("invalid_")
        ? { verdict: "wrong" }
        : { verdict: "refused", reason: identification.reason };
    }
    const { principal } = identification;
    return principal.kind === "key" && principal.scopes.includes("metrics")
      ? ALLOWED
      : { verdict: "not_permitted", reason: "forbidden" };
  };

  return new Elysia({ name: "palisade.metrics" }).use(auth).get(
    "/metrics",
    async ({ request, set, client, requestId }) => {
      if (ownListener && !viaMetricsListener(request)) {
        throw new AppError("NOT_FOUND", "No route matches this path.");
      }
      const found = await access(request);
      if (found.verdict === "refused" || found.verdict === "not_permitted") {
        onRefused?.(found.reason);
      }
      if (found.verdict === "not_permitted") {
        throw new AppError("FORBIDDEN", "This credential may not read metrics.");
      }
      if (found.verdict !== "allowed") {
        if (found.verdict === "wrong") await onAuthFailure?.({ client, requestId });
        throw new AppError("UNAUTHENTICATED", "A valid metrics token is required.", undefined, {
          "www-authenticate": 'Bearer realm="metrics"',
        });
      }
      set.headers["content-type"] = registry.contentType;
      return registry.metrics();
    },
    {
      public: true,
      response: {
        200: t.String({ description: "Prometheus text exposition format" }),
        // Missing or wrong METRICS_TOKEN; a valid credential without the metrics scope.
        ...problemResponses(401, 403, 404),
      },
      detail: {
        // Served on METRICS_PORT's listener alone: this port's document does not list it, as
        // this port answers it 404 (probe 87a F7).
        ...(ownListener ? { hide: true } : {}),
        tags: ["meta"],
        summary: "Prometheus metrics (text exposition format)",
        description:
          token === null
            ? "Open: no METRICS_TOKEN is set (development, or production behind a loopback METRICS_PORT listener)."
            : "`Authorization: Bearer <METRICS_TOKEN>`, or an API key with the `metrics` scope.",
        // As this configuration checks it: the token or a key, or nothing at all (probe 86d F5:
        // a production document said anonymous would do where it was 401).
        security: token === null ? [] : [{ bearerAuth: [] }, { apiKey: [] }],
      },
    },
  );
}
