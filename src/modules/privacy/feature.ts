/**
 * @module
 * The privacy feature: export and erasure over what every other feature contributes, and their
 * retention. Built after the others, from their privacy contributors; the audit log's own
 * contribution comes last, so erasure pseudonymises the rows the other contributors wrote too.
 */
import type { Core } from "../../core";
import { createEndsInFlight } from "../../ends-in-flight";
import type { Feature } from "../feature";
import { auditEventsContributor } from "./audit-contributor";
import type { PrivacyContributor } from "./contributor";
import { ErasureResumption } from "./erasure-resumption";
import { privacyModule, privacyRouteClasses } from "./index";
import { type PrivacyAccount, PrivacyService } from "./service";

export interface PrivacyFeature extends Feature {
  service: PrivacyService;
}

export function privacyFeature(
  core: Core,
  { account, features }: { account: PrivacyAccount; features: readonly Feature[] },
): PrivacyFeature {
  const auditEvents = auditEventsContributor(core);
  // The blocks an admin made, and the lockouts of their principals: before the audit log's own.
  const ipBlocks: PrivacyContributor = {
    name: "ipBlocks",
    export: (_userId, { actors }) => core.ipBlocks.heldFor(actors),
    erase: (_userId, { pseudonym, actors }) => core.ipBlocks.eraseActors(actors, pseudonym),
  };
  const resumption = new ErasureResumption(
    core.audit,
    core.logger,
    (part) => core.db.$client.transaction(part).immediate(),
    (actor) => service.erasing(actor),
  );
  const service: PrivacyService = new PrivacyService({
    sqlite: core.db.$client,
    clock: core.clock,
    audit: core.audit,
    logger: core.logger,
    onUnfinished: (actors) => resumption.rescan(actors),
    erased: (principal) => core.credentialSeal.erased(principal),
    account,
    contributors: [...features.flatMap((feature) => feature.privacy ?? []), ipBlocks, auditEvents],
  });
  const exportsInFlight = createEndsInFlight();
  return {
    name: "privacy",
    service,
    routeClasses: privacyRouteClasses,
    routes: ({ auth }) =>
      privacyModule({ auth, service, errors: core.errors, logger: core.logger, exportsInFlight }),
    endInFlight: async () => {
      exportsInFlight.endAll();
      await service.hurry();
    },
    maintenance: (now) => {
      service.retain(now);
      resumption.run(now);
    },
    close: () => resumption.close(),
  };
}
