/**
 * @module
 * The admin feature: API keys, the audit log and IP blocks, for admins. It holds no state of its
 * own: it drives the auth feature's keys and the core's audit log and blocker.
 */
import type { Core } from "../../core";
import type { Principal } from "../../plugins/auth/principal";
import type { ApiKeyService } from "../auth/api-keys";
import type { Feature } from "../feature";
import { adminModule, adminRouteClasses } from "./index";

export function adminFeature(
  core: Core,
  {
    apiKeys,
    stillAdmin,
  }: { apiKeys: ApiKeyService; stillAdmin: (principal: Principal) => boolean },
): Feature {
  return {
    name: "admin",
    routeClasses: adminRouteClasses,
    routes: ({ auth }) =>
      adminModule({
        auth,
        apiKeys,
        stillAdmin,
        ipBlocks: core.ipBlocks,
        audit: core.audit,
        authMetrics: core.metrics.auth,
        sqlite: core.db.$client,
        now: () => core.clock.now(),
      }),
  };
}
