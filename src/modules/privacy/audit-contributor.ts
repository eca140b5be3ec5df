/**
 * @module
 * The audit log as a privacy contributor: the events of the user and of their API keys (and
 * others' naming them) are exported, and pseudonymised on erasure: a first part in the erasure's
 * transaction, the rest a part at a time after it.
 */
import type { Core } from "../../core";
import { createAuditExport } from "../../plugins/audit/privacy";
import { type PrivacyContributor, StreamedJson } from "./contributor";
import { pseudonymisePart } from "./erasure-parts";

/**
 * Audit rows an erasure rewrites in its own transaction, all of its actors' together: no more than
 * a part of its rest, since that transaction holds the lock longest (probe 41e F3).
 */
const ERASURE_FIRST_ROWS = 250;

export function auditEventsContributor(core: Pick<Core, "db" | "audit">): PrivacyContributor {
  const exportAuditEvents = createAuditExport(core.db, core.audit);
  // Rows by the user's own API keys are theirs too: exported, and pseudonymised on erasure.
  return {
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
      const erasures = actors.map((actor) => ({ actor, pseudonym }));
      let next = 0;
      return () => {
        // Moved on only once the part commits: a part refused by a lock is asked again whole.
        const steps = core.db.$client
          .transaction(() => pseudonymisePart(core.audit, erasures, next))
          .immediate();
        next += steps.filter((step) => step.finished).length;
        return next === erasures.length;
      };
    },
  };
}
