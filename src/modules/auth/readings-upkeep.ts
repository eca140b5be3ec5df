/**
 * @module
 * Keeps the accounts' readings (./readings.ts) of this release's version, and the file marked as
 * served by them (db/readings-mark.ts) whenever they are written:
 * - once a start can no longer fail (src/index.ts, once its port is bound and API_KEYS applied).
 *   A start that took the file before that and was then refused (a port taken) had stopped the
 *   service it took the file from, and served nothing itself (probe 95a F2);
 * - at each maintenance tick: accounts a process of another release wrote since (its start's own
 *   rewrite still under way, or registrations in the seconds before it stopped) are written again
 *   (95a F1: a registration read only the first 1,000 of them, and the look-alikes of the rest
 *   registered).
 *
 * A start also marks a file that carries no mark, readings to write or not (95d F1: left unmarked,
 * a release before the mark whose readings differ started beside this one). Only `users:create`,
 * of the CLI commands, marks a file (it writes a reading); the others leave it as it is (95a F3: a
 * reading command stopped a release before the mark for good), and none writes readings again.
 *
 * The rewrite runs between requests, in short parts, each only while the file is still this
 * release's (asked inside the part's transaction: once another release took it, this one writes
 * no more of its readings). A part the lock refuses leaves the rest to the next tick.
 *
 * A file whose readings are another version's may still be served by a release before the mark,
 * one that started before the mark was made: it serves until its first tick, 10 s after its own
 * start's rewrite of the readings (seconds, on many accounts), looking up readings of its own
 * version only (probe 95b F1: rewritten meanwhile, its look-alike check found none, and it
 * registered look-alikes). So they are written again only once the readings of other versions
 * have stayed as they are for longer than that tick (nothing writes them then), and registrations
 * in this process wait until then (an account registered meanwhile has this version's reading,
 * which that release does not look up). Every process of this release waits so, the one that made
 * the mark or not, and one that took it from another marked release too: that mark may be seconds
 * old, its maker still waiting (probe 95c F1). Only what such a release writes starts the wait
 * again (readings of a version growing in number), not accounts erased meanwhile (95c F2).
 */
import type { Database } from "bun:sqlite";
import { isDatabaseBusy } from "../../db/busy";
import { otherReadingsMarks, readingsMarkWatch, takeReadingsMark } from "../../db/readings-mark";
import type { Logger } from "../../logging/logger";
import {
  idsOfOtherReadings,
  otherReadingsByVersion,
  READING_VERSION,
  rewriteReadings,
} from "./readings";

/** How long readings of other versions must stay unchanged, looked at every `pollMs` (0: not waited). */
export interface ReadingsQuiet {
  quietMs: number;
  pollMs: number;
}

/** Past a release before the mark's maintenance tick (10 s), with room for a late one. */
const DEFAULT_QUIET: ReadingsQuiet = { quietMs: 15_000, pollMs: 1_000 };

export class ReadingsUpkeep {
  /** Whether no release that reads addresses otherwise took the file. */
  readonly stillOurs: () => boolean;
  private rewriting: Promise<void> | null = null;
  /** Waiting for a release before the mark to have stopped (above). */
  private waitingForQuiet = false;
  /**
   * Whether the start has looked at the readings: before, a registration wrote a reading of this
   * version into a file not yet marked, which a release before the mark serving it did not see,
   * and a start stopped then never marked it (probe 95e F1).
   */
  private lookedAtStart: boolean;
  /** Resolved once the start has looked at the readings. */
  private readonly startLooked = Promise.withResolvers<void>();

  /** `afterStart`: registrations wait until `keep` has run with `atStart` (src/index.ts). */
  constructor(
    private readonly sqlite: Database,
    private readonly logger: Logger,
    private readonly quiet: ReadingsQuiet = DEFAULT_QUIET,
    { afterStart = false }: { afterStart?: boolean } = {},
  ) {
    this.stillOurs = readingsMarkWatch(sqlite, READING_VERSION);
    this.lookedAtStart = !afterStart;
    if (this.lookedAtStart) this.startLooked.resolve();
  }

  /**
   * Resolves once the start has looked at the readings, or after `maxMs`: a registration that
   * arrives in the tenth of a second before waits for it rather than being refused (503) for it.
   */
  async untilLookedAtStart(maxMs: number): Promise<void> {
    if (this.lookedAtStart) return;
    let timer: Timer | undefined;
    await Promise.race([
      this.startLooked.promise,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, maxMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Whether registrations wait: not yet looked at, or a release before the mark may still serve. */
  registrationsWait(): boolean {
    return !this.lookedAtStart || this.waitingForQuiet;
  }

  /** Registrations waiting for the start's look stop waiting; they find it not taken (503). */
  notLookedAtStart(): void {
    this.startLooked.resolve();
  }

  /**
   * Takes the file and writes its readings again when some are another version's, or, at start,
   * when another release's mark is on it. At a tick, another release's mark is left as it is: the
   * schema guard stops this process for it.
   */
  keep({ atStart = false }: { atStart?: boolean } = {}): void {
    this.takeAndRewrite(atStart);
    if (atStart) {
      this.lookedAtStart = true;
      this.startLooked.resolve();
    }
  }

  private takeAndRewrite(atStart: boolean): void {
    if (this.rewriting !== null) return;
    const otherMarks = otherReadingsMarks(this.sqlite, READING_VERSION);
    if (otherMarks.length > 0 && !atStart) return;
    const othersStored = idsOfOtherReadings(this.sqlite, 1).length > 0;
    if (!othersStored) {
      // Nothing to write again. A start still marks an unmarked file as this release's: left
      // unmarked, a release before the mark whose readings differ could start on it beside this
      // one (probe 95d F1: on a file this release made, and each registered look-alikes of the
      // other's accounts).
      if (atStart && otherMarks.length === 0) this.markUnmarked();
      if (otherMarks.length === 0) return;
    }
    const taken = takeReadingsMark(this.sqlite, READING_VERSION);
    if (taken.dropped.length > 0) {
      this.logger.warn(
        { readingVersions: taken.dropped, readingVersion: READING_VERSION },
        "the accounts' readings (look-alike addresses) were another release's: this process takes the file and writes them again; a process of that release still serving it refuses registrations now and stops at its next check (two releases that read addresses otherwise cannot serve one file together)",
      );
    } else if (!taken.held) {
      this.logger.info(
        { readingVersion: READING_VERSION },
        "accounts' readings (look-alike addresses) of another version found: the file is marked as this release's while they are written again; a process of an earlier release still serving it stops at its next check, saying an index on users is not one of its migrations'",
      );
    }
    // Whoever's mark was on the file, a release before the mark may still be serving it: the mark
    // another release made may be seconds old, its maker still waiting (probe 95c F1).
    const rewritten =
      this.quiet.quietMs <= 0
        ? this.rewrite()
        : this.untilQuiet().then((stillOurs) => (stillOurs ? this.rewrite() : undefined));
    this.rewriting = rewritten.finally(() => {
      this.rewriting = null;
    });
  }

  /**
   * Resolves once the readings of other versions have stayed as they are for `quietMs`, true; false
   * if another release took the file meanwhile.
   */
  private async untilQuiet(): Promise<boolean> {
    this.waitingForQuiet = true;
    const began = performance.now();
    this.logger.info(
      { quietMs: this.quiet.quietMs },
      "accounts' readings of other versions are written again once none has been written for the quiet time (a release before the mark may still serve this file until its next check); registrations here wait until then",
    );
    try {
      let seen = otherReadingsByVersion(this.sqlite);
      let quietSince = began;
      let extended = false;
      while (performance.now() - quietSince < this.quiet.quietMs) {
        await Bun.sleep(this.quiet.pollMs);
        if (!this.stillOurs()) return false;
        const now = otherReadingsByVersion(this.sqlite);
        // Only what a release before the mark writes starts the wait again: readings of its
        // version, or of one not seen before. Accounts erased meanwhile do not (95c F2: erasures
        // every 14 s held registrations for 90 s).
        if (grew(seen, now)) {
          quietSince = performance.now();
          if (!extended) {
            extended = true;
            this.logger.info(
              { versions: Object.fromEntries(now) },
              "accounts' readings of another version are being written (a release before the mark serves this file): the wait goes on",
            );
          }
        }
        seen = now;
      }
      this.logger.info(
        { waitedMs: Math.round(performance.now() - began) },
        "no reading of another version written for the quiet time: writing the accounts' readings again",
      );
      return true;
    } catch (error) {
      // Locked past the wait: the next tick takes it up again.
      this.logger.warn(
        { err: error },
        "waiting to write the accounts' readings failed; the next maintenance tick tries again",
      );
      return false;
    } finally {
      this.waitingForQuiet = false;
    }
  }

  /** Marks the file as this release's if it carries no mark, said in an info line. */
  private markUnmarked(): void {
    if (takeReadingsMark(this.sqlite, READING_VERSION).held) return;
    this.logger.info(
      { readingVersion: READING_VERSION },
      "the file is marked as served by this release's readings (look-alike addresses): a release before the mark cannot start on it, and one still serving it stops at its next check, saying an index on users is not one of its migrations'",
    );
  }

  /** Resolves once the rewrite under way, if any, has ended. */
  settled(): Promise<void> {
    return this.rewriting ?? Promise.resolve();
  }

  private async rewrite(): Promise<void> {
    try {
      const { written, complete } = await rewriteReadings(this.sqlite, this.stillOurs);
      if (!complete) {
        this.logger.warn(
          { accounts: written },
          "another release took the file while this process wrote the accounts' readings: it wrote no more of them",
        );
      } else if (written > 0) {
        this.logger.info(
          { accounts: written },
          "accounts' readings written (look-alike addresses)",
        );
      }
    } catch (error) {
      // Either way the rows left are still another version's: the next tick goes on with them.
      if (isDatabaseBusy(error)) {
        this.logger.warn(
          {},
          "the accounts' readings could not all be written: the database is locked; the next maintenance tick goes on",
        );
      } else {
        this.logger.error(
          { err: error },
          "writing the accounts' readings failed; the next maintenance tick tries again",
        );
      }
    }
  }
}

/** Whether some version has more accounts in `now` than in `before` (a version new to it too). */
function grew(
  before: ReadonlyMap<string | null, number>,
  now: ReadonlyMap<string | null, number>,
): boolean {
  for (const [version, accounts] of now) if (accounts > (before.get(version) ?? 0)) return true;
  return false;
}
