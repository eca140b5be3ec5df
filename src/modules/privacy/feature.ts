/**
 * @module
 * The privacy feature: export and erasure over what every other feature contributes, and their
 * retention. Built after the others, from their privacy contributors; the audit log's own
 * contribution comes last, so erasure pseudonymises the rows the other contributors wrote too.
 */
import type { Core } from "../../core";
import { createAuditExport } from "../../plugins/audit/privacy";
import type { Feature } from "../feature";
import { type PrivacyContributor, StreamedJson } from "./contributor";
import { ErasureResumption } from "./erasure-resumption";
import { privacyModule, privacyRouteClasses } from "./index";
import { type PrivacyAccount, PrivacyService } from "./service";

/**
 * Audit rows an erasure rewrites in its own transaction, all of its actors' together: no more than
 * a part of its rest, since that transaction holds the lock longest (probe 41e F3).
 */
const ERASURE_FIRST_ROWS = 250;
/**
 * Audit rows a part of its rest rewrites in one transaction (~7 ms of the write lock here): short
 * enough that a writer of another process waiting out the lock finds it free in the pause after
 * (probe 41d F3: parts of 1,000 with 10 ms between refused some of the service's writes while
 * `users:erase` ran).
 */
const ERASURE_PART_ROWS = 250;

export interface PrivacyFeature extends Feature {
  service: PrivacyService;
}

export function privacyFeature(
  core: Core,
  { account, features }: { account: PrivacyAccount; features: readonly Feature[] },
): PrivacyFeature {
  const exportAuditEvents = createAuditExport(core.db, core.audit);
  // Rows by the user's own API keys are theirs too: exported, and pseudonymised on erasure.
  const auditEvents: PrivacyContributor = {
    name: "auditEvents",
    // Streamed a page at a time, a point to let other requests in after each (exportBody).
    export: (_userId, { actors }) =>
      new StreamedJson(function* () {
        yield "[";
        let comma = "";
        for (const page of exportAuditEvents(actors)) {
          yield "";
          if (page.length === 0) continue;
          yield comma + page.map((event) => JSON.stringify(event)).join(",");
          comma = ",";
        }
        yield "]";
      }),
    // In the erasure's transaction, the record of each actor's erasure (so that events written
    // from then on take the pseudonym) and a first part of its rows: a short history is done
    // there, at once; a long one is finished by eraseRest, other requests served between parts.
    erase: (_userId, { pseudonym, actors }) => {
      const part = Math.floor(ERASURE_FIRST_ROWS / actors.length);
      for (const actor of actors) core.audit.pseudonymiseSome(actor, pseudonym, part);
    },
    eraseRest: (_userId, { pseudonym, actors }) => {
      let next = 0;
      return () => {
        const examined = core.audit.pseudonymiseSome(actors[next]!, pseudonym, ERASURE_PART_ROWS);
        if (examined < ERASURE_PART_ROWS) next++;
        return next === actors.length;
      };
    },
  };
  // The blocks an admin made, and the lockouts of their principals: before the audit log's own.
  const ipBlocks: PrivacyContributor = {
    name: "ipBlocks",
    export: (_userId, { actors }) => core.ipBlocks.heldFor(actors),
    erase: (_userId, { pseudonym, actors }) => core.ipBlocks.eraseActors(actors, pseudonym),
  };
  const resumption = new ErasureResumption(core.audit, core.logger, (actor) =>
    service.erasing(actor),
  );
  const service: PrivacyService = new PrivacyService({
    sqlite: core.db.$client,
    clock: core.clock,
    audit: core.audit,
    logger: core.logger,
    onUnfinished: (actors) => resumption.rescan(actors),
    account,
    contributors: [...features.flatMap((feature) => feature.privacy ?? []), ipBlocks, auditEvents],
  });
  return {
    name: "privacy",
    service,
    routeClasses: privacyRouteClasses,
    routes: ({ auth }) =>
      privacyModule({ auth, service, errors: core.errors, logger: core.logger }),
    maintenance: (now) => {
      service.retain(now);
      resumption.run(now);
    },
    close: () => resumption.close(),
  };
}
