/**
 * @module
 * What the audit log holds about a person, for the privacy export: the events whose actor is one
 * of theirs (the user, and the API keys they own), with an event's address only when their own
 * credential succeeded (a failed login or a
 * replayed refresh token comes from whoever tried it, and that third party's address must not be
 * handed out), and never the address an event is about (a block's) nor another principal its
 * detail names; and others' events that name them (the key an operator made for them, an admin's
 * rotation of their key or look-up of their usage: what erasure rewrites too, found through
 * `audit_event_names`; probe 38b F3), without that actor's address and with that actor withheld
 * unless it is no one's (`cli`, `system`, `stripe`). Erasure is `AuditLog.pseudonymiseSome`, a
 * part at a time (the privacy feature's audit contributor).
 */
import { and, asc, eq, gt } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { auditEventNames, auditEvents } from "../../db/schema";
import { PSEUDONYM_PREFIX } from "./chain";
import { SUBJECT_ADDRESS_TYPES, withPrincipalsReplaced } from "./events";
import type { AuditLog } from "./log";

/** What an export shows in place of a principal that is not the person's own. */
export const WITHHELD_PRINCIPAL = "(another principal)";
const WITHHELD = WITHHELD_PRINCIPAL;

/**
 * An event's detail with every principal it names that is not the person's own withheld (an
 * admin's `admin.usage.queried` names the user looked up, `admin.key.revoked` the key of another:
 * someone else's, and theirs to export), an erased one's pseudonym included.
 */
function withoutOthers(detail: string, actors: ReadonlyMap<string, number>): unknown {
  const parsed = JSON.parse(detail) as unknown;
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return parsed;
  const fields = withPrincipalsReplaced(parsed as Record<string, unknown>, (principal) =>
    actors.has(principal) ? null : WITHHELD,
  );
  return Object.fromEntries(
    Object.entries(fields).map(([name, value]) => [
      name,
      typeof value === "string" && value.startsWith(PSEUDONYM_PREFIX) ? WITHHELD : value,
    ]),
  );
}

/** The actors that are no one's: shown as they are; any other is a principal or its pseudonym. */
const NO_ONES = new Set(["cli", "system", "stripe"]);

/**
 * The first of the actors (by their place in the list) an event's detail names, or undefined: for
 * a row found through the names index, which must name the actor it was found under and none
 * before it (a row naming two is given once, under the first).
 */
function firstNamed(detail: string, actors: ReadonlyMap<string, number>): number | undefined {
  const parsed = JSON.parse(detail) as unknown;
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return undefined;
  let first: number | undefined;
  withPrincipalsReplaced(parsed as Record<string, unknown>, (principal) => {
    const place = actors.get(principal);
    if (place !== undefined && (first === undefined || place < first)) first = place;
    return null;
  });
  return first;
}

/** How many events the export reads at a time. */
const EXPORT_PAGE = 500;

type AuditRowRead = typeof auditEvents.$inferSelect;

/**
 * The person's events, a page at a time: a long history is not read, checked and held whole
 * before the answer's first byte (probe 39a F1: 100,000 rows held every request for 1.8 s and
 * took hundreds of MB). Each actor's own events in the order written, then others' events naming
 * each, every page one range of an index (`audit_events_actor`, `audit_event_names`' key): one
 * query over them all was sorted whole again for every page (probe 40a F2: 100 ms a page at
 * 800,000 events). A page may come out empty (every row of it left out).
 */
export function createAuditExport(db: AppDatabase, audit: AuditLog) {
  const subjectAddressTypes: ReadonlySet<string> = new Set(SUBJECT_ADDRESS_TYPES);
  const shown = (row: AuditRowRead, actors: ReadonlyMap<string, number>) => {
    const own = row.actor !== null && actors.has(row.actor);
    // The address of the user's own credential succeeding, never a third party's (a failed
    // login), nor the address an event is about (a block's), nor another actor's.
    const shownIp =
      own && row.outcome === "success" && !subjectAddressTypes.has(row.type) ? row.ip : null;
    return {
      id: row.id,
      actor: own || row.actor === null || NO_ONES.has(row.actor) ? row.actor : WITHHELD,
      at: row.at,
      type: row.type,
      ip: shownIp,
      route: row.route,
      requestId: row.requestId,
      outcome: row.outcome,
      detail: withoutOthers(row.detail, actors),
    };
  };
  return function* exportAuditEvents(actorList: readonly string[]) {
    // Events still queued belong in the export too.
    audit.flush();
    // Each actor's place in the list, asked of every row (a user may have thousands of keys).
    const actors = new Map(actorList.map((actor, place) => [actor, place]));
    // Only rows as Palisade wrote or erased them: one whose actor was rewritten in the file would
    // show someone else's event, and address, as the user's (audit:verify reports it).
    for (const actor of actorList) {
      let after = 0;
      for (;;) {
        const rows = db
          .select()
          .from(auditEvents)
          .where(and(eq(auditEvents.actor, actor), gt(auditEvents.id, after)))
          .orderBy(asc(auditEvents.id))
          .limit(EXPORT_PAGE)
          .all();
        yield rows.filter((row) => audit.vouches(row)).map((row) => shown(row, actors));
        if (rows.length < EXPORT_PAGE) break;
        after = rows.at(-1)!.id;
      }
    }
    // Others' events naming them, name by name: an event that does name it (an index row written
    // into the file must not bring anyone's event in, probe 39a F5), not one of their own (above),
    // nor one already given under a name before it.
    for (const [place, name] of actorList.entries()) {
      let after = 0;
      for (;;) {
        const rows = db
          .select({ event: auditEvents })
          .from(auditEventNames)
          .innerJoin(auditEvents, eq(auditEvents.id, auditEventNames.eventId))
          .where(and(eq(auditEventNames.name, name), gt(auditEventNames.eventId, after)))
          .orderBy(asc(auditEventNames.eventId))
          .limit(EXPORT_PAGE)
          .all()
          .map(({ event }) => event);
        yield rows
          .filter(
            (row) =>
              (row.actor === null || !actors.has(row.actor)) &&
              firstNamed(row.detail, actors) === place &&
              audit.vouches(row),
          )
          .map((row) => shown(row, actors));
        if (rows.length < EXPORT_PAGE) break;
        after = rows.at(-1)!.id;
      }
    }
  };
}
