/**
 * @module
 * The admin feature: API keys, the audit log and IP blocks, for admins. It holds no state of its
 * own: it drives the auth feature's keys and the core's audit log and blocker.
 */
import type { Core } from "../../core";
import type { CredentialStanding } from "../../plugins/auth";
import type { ApiKeyService } from "../auth/api-keys";
import type { Feature } from "../feature";
import { adminModule, adminRouteClasses } from "./index";

export function adminFeature(
  core: Core,
  { apiKeys, standing }: { apiKeys: ApiKeyService; standing: CredentialStanding },
): Feature {
  return {
    name: "admin",
    routeClasses: adminRouteClasses,
    routes: ({ auth }) =>
      adminModule({
        auth,
        apiKeys,
        standing,
        ipBlocks: core.ipBlocks,
        audit: core.audit,
        authMetrics: core.metrics.auth,
        sqlite: core.db.$client,
        now: () => core.clock.now(),
      }),
  };
}
