/**
 * @module
 * An erasure's audit rows a part at a time: the size of a part, the pause between two, and the
 * part itself, one for the erasure's own rest (audit-contributor.ts, the privacy service) and for
 * the maintenance finishing an erasure a process stopped (erasure-resumption.ts).
 */
import type { AuditLog } from "../../plugins/audit/log";

/**
 * Audit rows a part rewrites in one transaction (~7 ms of the write lock here): short enough that
 * a writer of another process waiting out the lock finds it free in the pause after (probe 41d F3:
 * parts of 1,000 with 10 ms between refused some of the service's writes while `users:erase` ran).
 */
export const ERASURE_PART_ROWS = 250;

/**
 * The pause between two parts of an erasure: longer than the gaps between SQLite's busy waits
 * (5, 10, 15 ms early on), so that a writer of another process waiting out the lock always looks
 * once while it is free (probe 41d F3: 10 ms was not).
 */
export const ERASURE_PART_PAUSE_MS = 20;

/** An erased actor and the pseudonym its rows take. */
export interface ErasedActor {
  actor: string;
  pseudonym: string;
}

/** What a part did with one actor: the rows it looked at, and whether none is left. */
export interface PartStep {
  examined: number;
  finished: boolean;
}

/**
 * One part, in the caller's transaction: up to ERASURE_PART_ROWS rows of `erasures` from `from`
 * on, going on to the next actor while rows are to spare (one actor a part made a user with 2,000
 * keys, each with a few rows, wait 2,000 pauses, ~43 s, for the 204). Every actor counts one row
 * at least, so a part also asks at most ERASURE_PART_ROWS actors. A step for each actor it asked,
 * in order: all finished but perhaps the last.
 */
export function pseudonymisePart(
  audit: Pick<AuditLog, "pseudonymiseSome">,
  erasures: readonly ErasedActor[],
  from = 0,
): PartStep[] {
  const steps: PartStep[] = [];
  let left = ERASURE_PART_ROWS;
  for (let at = from; at < erasures.length && left > 0; at++) {
    const { actor, pseudonym } = erasures[at]!;
    const examined = audit.pseudonymiseSome(actor, pseudonym, left);
    steps.push({ examined, finished: examined < left });
    if (examined >= left) break;
    left -= Math.max(1, examined);
  }
  return steps;
}
