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
 * limited per address, and a blocked address is refused before its token is looked at.
 */
import { Elysia, t } from "elysia";
import type { Registry } from "prom-client";
import { AppError, problemResponses } from "../../errors";
import type { authPlugin } from "../auth";
import type { CredentialVerifier } from "../auth/credentials";
import type { ResolvedClient } from "../client-ip";
import { constantTimeEqual } from "../csrf/token";
import type { RouteClass } from "../route-class";

export interface MetricsOptions {
  registry: Registry;
  token: string | null;
  credentials: CredentialVerifier;
  auth: ReturnType<typeof authPlugin>;
  /** A wrong or missing token: counted as a violation of the client's address, like a bad login. */
  onAuthFailure?: (failure: { client: ResolvedClient; requestId: string }) => unknown;
}

/**
 * /metrics is limited per address (`RATE_LIMIT_METRICS`) and not a probe: it checks a token, so it
 * must not be an unthrottled guessing oracle, even from a blocked address.
 */
export const metricsRouteClasses: readonly RouteClass[] = [
  { routes: ["GET /metrics"], policy: "metrics" },
];

export function metrics({ registry, token, credentials, auth, onAuthFailure }: MetricsOptions) {
  const expected = token === null ? null : `Bearer ${token}`;

  const allowed = (request: Request): boolean => {
    if (expected === null) return true;
    const authorization = request.headers.get("authorization") ?? "";
    if (constantTimeEqual(authorization, expected)) return true;
    const key =
      request.headers.get("x-api-key") ??
      (authorization.startsWith("Bearer pal_") ? authorization.slice(7) : null);
    if (key === null) return false;
    const verification = credentials.verifyApiKey(key);
    return (
      verification.ok &&
      verification.principal.kind === "key" &&
      verification.principal.scopes.includes("metrics")
    );
  };

  return new Elysia({ name: "palisade.metrics" }).use(auth).get(
    "/metrics",
    async ({ request, set, client, requestId }) => {
      if (!allowed(request)) {
        await onAuthFailure?.({ client, requestId });
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
        // Missing or wrong METRICS_TOKEN.
        ...problemResponses(401),
      },
      detail: { tags: ["meta"], summary: "Prometheus metrics (text exposition format)" },
    },
  );
}
