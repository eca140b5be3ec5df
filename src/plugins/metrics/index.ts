/**
 * @module
 * `GET /metrics` in Prometheus text format, behind `Authorization: Bearer METRICS_TOKEN` when one
 * is configured. The request metrics are counted by the access-log stage (one hook for both); its
 * `route` label is the route pattern or `<unmatched>`, and its method label a standard method or
 * OTHER, so a scanner cannot grow the label sets.
 */
import { Elysia } from "elysia";
import type { Registry } from "prom-client";
import { AppError } from "../../errors";
import { constantTimeEqual } from "../csrf/token";

export interface MetricsOptions {
  registry: Registry;
  token: string | null;
}

export function metrics({ registry, token }: MetricsOptions) {
  const expected = token === null ? null : `Bearer ${token}`;

  return new Elysia({ name: "palisade.metrics" })
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
