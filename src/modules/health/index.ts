/**
 * @module
 * Liveness (`/health`: the process answers) and readiness (`/ready`: its dependencies answer), for
 * Docker's HEALTHCHECK, load balancers and Prometheus blackbox probes.
 */
import { Elysia } from "elysia";
import type { authPlugin } from "../../plugins/auth";
import type { RouteClass } from "../../plugins/route-class";
import { HealthResponse, ReadyResponse } from "./model";
import { type ReadinessCheck, runChecks } from "./service";

export interface HealthModuleOptions {
  checks: Record<string, ReadinessCheck>;
  auth: ReturnType<typeof authPlugin>;
  /** Cleans a failing check's message of secrets before `/ready` shows it. */
  scrub?: (text: string) => string;
}

/** Probes: never rate limited nor blocked, so an orchestrator's checks keep answering. */
export const healthRouteClasses: readonly RouteClass[] = [
  { routes: ["GET /health", "GET /ready"], probe: true },
];

export function healthModule({ checks, auth, scrub }: HealthModuleOptions) {
  return new Elysia({ name: "palisade.health" })
    .use(auth)
    .get("/health", () => ({ status: "ok" as const }), {
      public: true,
      response: { 200: HealthResponse },
      detail: { tags: ["health"], summary: "Liveness" },
    })
    .get(
      "/ready",
      async ({ set }) => {
        const result = await runChecks(checks, scrub);
        set.status = result.status === "ready" ? 200 : 503;
        return result;
      },
      {
        public: true,
        response: { 200: ReadyResponse, 503: ReadyResponse },
        detail: { tags: ["health"], summary: "Readiness: each dependency's state" },
      },
    );
}
