/**
 * @module
 * Request metrics, counted after each response, and `GET /metrics` in Prometheus text format
 * (behind `Authorization: Bearer METRICS_TOKEN` when one is configured). The `route` label is the
 * route pattern, or `<unmatched>`, and the method label is one of the standard methods or OTHER, so
 * a scanner cannot grow the label sets.
 */
import { Elysia } from "elysia";
import type { Registry } from "prom-client";
import { AppError } from "../../errors";
import { statusOf, UNMATCHED_ROUTE } from "../access-log";
import { constantTimeEqual } from "../csrf/token";
import { stateOf } from "../request-state";
import type { HttpMetrics } from "./http";

const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

export interface MetricsOptions {
  registry: Registry;
  http: HttpMetrics;
  token: string | null;
}

export function metrics({ registry, http, token }: MetricsOptions) {
  const expected = token === null ? null : `Bearer ${token}`;

  return new Elysia({ name: "palisade.metrics" })
    .onAfterResponse(function countRequest(context) {
      const { request, startedAt } = stateOf(context);
      const method = KNOWN_METHODS.has(request.method) ? request.method : "OTHER";
      http.observe(
        method,
        context.route || UNMATCHED_ROUTE,
        statusOf(context.responseValue, context.set.status),
        (performance.now() - startedAt) / 1000,
      );
    })
    .get(
      "/metrics",
      async ({ request, set }) => {
        if (expected !== null) {
          const given = request.headers.get("authorization") ?? "";
          if (!constantTimeEqual(given, expected)) {
            throw new AppError("UNAUTHENTICATED", "A valid metrics token is required.", undefined, {
              "www-authenticate": 'Bearer realm="metrics"',
            });
          }
        }
        set.headers["content-type"] = registry.contentType;
        return registry.metrics();
      },
      {
        detail: {
          tags: ["meta"],
          summary: "Prometheus metrics (text exposition format)",
          security: token === null ? [] : [{ metricsToken: [] }],
          responses: {
            200: { description: "Prometheus text format" },
            401: { description: "Missing or wrong metrics token (problem+json)" },
          },
        },
      },
    )
    .as("global");
}
