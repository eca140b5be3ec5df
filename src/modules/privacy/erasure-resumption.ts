/**
 * @module
 * Finishing erasures a process stopped part-way. An erasure rewrites a long audit history a part
 * at a time after its transaction commits (the privacy service's `eraseRest`); a process that
 * stops between two parts (a crash, a kill, a deploy, `users:erase` interrupted) leaves the erased
 * actor's older rows as they were. The audit log's record of the erasure (`audit_erased_actors`,
 * keyed and MACed) is already written, so the actors still to finish can be found by asking it of
 * every distinct actor and name in the log — which this does, a bounded part per maintenance run:
 * once after the start, when an erasure of this process could not finish, and a minute after
 * another process (a second server, the CLI) recorded an erasure, time for it to finish its own
 * (probe 41b F1: a `users:erase` killed part-way was left until the server restarted). What it
 * finds it rewrites as the erasure would have, a part every 20 ms, not a part per maintenance run
 * (probe 41b F8: 300,000 rows would have taken 25 minutes).
 */
import { elapsedMs } from "../../clock";
import type { Logger } from "../../logging/logger";
import type { AuditLog, ErasureScanCursor } from "../../plugins/audit/log";
import { ERASURE_PART_PAUSE_MS, type ErasedActor, pseudonymisePart } from "./erasure-parts";

/** Distinct actors and names looked at per maintenance run. */
const ACTORS_PER_RUN = 2_000;
/** How long another process's erasure is left to finish its own rest before this one looks. */
export const OTHERS_ERASURE_GRACE_MS = 60_000;

type ResumableLog = Pick<AuditLog, "pseudonymiseSome" | "unfinishedErasures" | "erasuresRecorded">;

export class ErasureResumption {
  private scanning = true;
  private cursor: ErasureScanCursor | null = null;
  private readonly pending: ErasedActor[] = [];
  /** Actors found by this scan: one found by its events is found again by its names. */
  private readonly found = new Set<string>();
  /** Rows rewritten here per pseudonym, said once its last actor is done. */
  private readonly rewritten = new Map<string, number>();
  /** Erasures recorded when last counted, and when a new one was first seen (null: none new). */
  private recorded: number | null = null;
  private newSince: number | null = null;
  /** Whether this scan passed over an erasure too recent to take over. */
  private youngSeen = false;
  /**
   * Erasures (their pseudonyms) some of whose actors this scan passed over as too recent: not said
   * to be finished until a later look has taken those too (probe 42c F1: a look that crossed the
   * minute took an erasure's later actors, and said it finished with its earlier ones left).
   */
  private readonly youngPseudonyms = new Set<string>();
  /** Actors of this process's own erasures that could not finish. */
  private readonly stoppedHere = new Set<string>();
  private continuation: Timer | null = null;

  constructor(
    private readonly audit: ResumableLog,
    private readonly logger: Logger,
    /** Runs a part in one immediate transaction (the audit log's writes in it join it). */
    private readonly inTransaction: <T>(part: () => T) => T,
    /** Whether this process's own erasure of the actor is still under way (not stopped). */
    private readonly underWay: (actor: string) => boolean = () => false,
  ) {}

  /**
   * Looks through the whole log again, from its start: an erasure of this process could not finish
   * (`stopped`: its actors, taken however recent, since nothing else is finishing them).
   */
  rescan(stopped: readonly string[] = []): void {
    this.scanning = true;
    this.cursor = null;
    this.found.clear();
    this.youngPseudonyms.clear();
    for (const actor of stopped) this.stoppedHere.add(actor);
  }

  /** One maintenance run: a part of what was found, then the scan a step further. */
  run(now: number): void {
    this.noticeOthers(now);
    if (this.continuation === null) this.finishPart();
    if (this.scanning) this.scanFurther(now);
    this.continueSoon();
  }

  /** The look through the log's actors and names, a step further. */
  private scanFurther(now: number): void {
    const { unfinished, next } = this.audit.unfinishedErasures(this.cursor, ACTORS_PER_RUN);
    for (const erasure of unfinished) {
      if (this.found.has(erasure.actor) || this.underWay(erasure.actor)) continue;
      // Recorded less than the grace ago: most likely still under way in the process that made it
      // (a long `users:erase`), which finishes it and says so; looked at again after the grace
      // (probe 41e F1: it was taken over and reported as stopped). So is one stamped a little
      // ahead of this run's time (committed while the run went on: probe 41f); one further
      // ahead, written into the file, does not put it off longer.
      const age = now - erasure.erasedAt;
      if (!this.stoppedHere.has(erasure.actor) && Math.abs(age) < OTHERS_ERASURE_GRACE_MS) {
        this.youngSeen = true;
        this.youngPseudonyms.add(erasure.pseudonym);
        continue;
      }
      this.found.add(erasure.actor);
      this.pending.push({ actor: erasure.actor, pseudonym: erasure.pseudonym });
    }
    this.cursor = next;
    if (next === null) {
      this.scanning = false;
      this.found.clear();
      this.stoppedHere.clear();
      if (this.youngSeen) this.newSince ??= now;
      this.youngSeen = false;
      // What was finished while the scan went on, now that it has found all there is.
      for (const pseudonym of [...this.rewritten.keys()]) this.sayFinished(pseudonym);
    }
  }

  /** Stops the parts still to come (at shutdown); the next start finds what is left. */
  close(): void {
    if (this.continuation !== null) clearTimeout(this.continuation);
    this.continuation = null;
  }

  /**
   * One part of the erasures found, from the first; a failure (a lock) leaves them all as they
   * were for the next run.
   */
  private finishPart(): void {
    // Another process may be finishing one too (its own rest): each part is one transaction, and
    // the rows either rewrote are not rewritten again.
    const steps = this.inTransaction(() => pseudonymisePart(this.audit, this.pending));
    // Once committed: what it rewrote, and the erasures it finished.
    for (const { examined, finished } of steps) {
      const { pseudonym } = this.pending[0]!;
      if (examined > 0)
        this.rewritten.set(pseudonym, (this.rewritten.get(pseudonym) ?? 0) + examined);
      if (!finished) return;
      this.pending.shift();
      this.sayFinished(pseudonym);
    }
  }

  /**
   * Said once an erasure (the account and its keys) is done, and only when rows were left to this
   * process; never the actor: it is what the erasure took out. Not while the look through the log
   * goes on: it may yet find more of the erasure's actors (probe 42b F1: parts as fast as the
   * scan's runs are slow said one erasure two or three times, the first with rows still left).
   */
  private sayFinished(pseudonym: string): void {
    if (this.scanning || this.youngPseudonyms.has(pseudonym)) return;
    if (this.pending.some((other) => other.pseudonym === pseudonym)) return;
    const rows = this.rewritten.get(pseudonym);
    if (rows === undefined) return;
    this.rewritten.delete(pseudonym);
    this.logger.warn(
      { pseudonym, rows },
      "an erasure stopped part-way was finished: its account's remaining audit rows now carry its pseudonym",
    );
  }

  private continueSoon(): void {
    if (this.continuation !== null || this.pending.length === 0) return;
    this.continuation = setTimeout(() => {
      this.continuation = null;
      try {
        this.finishPart();
      } catch (error) {
        // Locked or failing: the next maintenance run goes on from here.
        this.logger.warn(
          { err: error },
          "finishing a stopped erasure waits for the next maintenance",
        );
        return;
      }
      this.continueSoon();
    }, ERASURE_PART_PAUSE_MS);
  }

  /**
   * Erasures recorded since the last count, by this process or another: once the newest has had
   * its grace, the log is looked through again (a scan started before it could have missed it).
   */
  private noticeOthers(now: number): void {
    const recorded = this.audit.erasuresRecorded();
    if (this.recorded === null) this.recorded = recorded;
    if (recorded !== this.recorded) {
      this.recorded = recorded;
      // From the first one not yet looked for: erasures a minute apart must not put the look off
      // for ever (probe 41d).
      this.newSince ??= now;
    }
    if (this.newSince !== null && elapsedMs(now, this.newSince) >= OTHERS_ERASURE_GRACE_MS) {
      this.newSince = null;
      this.rescan();
    }
  }
}
