/**
 * @module
 * The health feature: `/health` (liveness) and `/ready`, which runs every readiness check the core
 * and the other features declare.
 */
import type { Core } from "../../core";
import { secretScrubber } from "../../logging/logger";
import type { Feature } from "../feature";
import { healthModule, healthRouteClasses } from "./index";

export function healthFeature(core: Pick<Core, "config">): Feature {
  const scrub = secretScrubber(core.config.secretValues);
  return {
    name: "health",
    routeClasses: healthRouteClasses,
    routes: ({ auth, readiness }) => healthModule({ auth, checks: readiness, scrub }),
  };
}
