/**
 * @module
 * The health feature: `/health` (liveness) and `/ready`, which runs every readiness check the core
 * and the other features declare.
 */
import type { Feature } from "../feature";
import { healthModule, healthRouteClasses } from "./index";

export function healthFeature(): Feature {
  return {
    name: "health",
    routeClasses: healthRouteClasses,
    routes: ({ auth, readiness }) => healthModule({ auth, checks: readiness }),
  };
}
