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
 * Only then is the file taken: a file whose readings are all this version's is left unmarked, so
 * a release before the mark that reads addresses the same way goes on serving it (95a F3: a
 * command of this release stopped it for good). CLI commands never write readings.
 *
 * The rewrite runs between requests, in short parts, each only while the file is still this
 * release's (asked inside the part's transaction: once another release took it, this one writes
 * no more of its readings). A part the lock refuses leaves the rest to the next tick.
 */
import type { Database } from "bun:sqlite";
import { isDatabaseBusy } from "../../db/busy";
import { otherReadingsMarks, readingsMarkWatch, takeReadingsMark } from "../../db/readings-mark";
import type { Logger } from "../../logging/logger";
import { idsOfOtherReadings, READING_VERSION, rewriteReadings } from "./readings";

export class ReadingsUpkeep {
  /** Whether no release that reads addresses otherwise took the file. */
  readonly stillOurs: () => boolean;
  private rewriting: Promise<void> | null = null;

  constructor(
    private readonly sqlite: Database,
    private readonly logger: Logger,
  ) {
    this.stillOurs = readingsMarkWatch(sqlite, READING_VERSION);
  }

  /**
   * Takes the file and writes its readings again when some are another version's, or, at start,
   * when another release's mark is on it. At a tick, another release's mark is left as it is: the
   * schema guard stops this process for it.
   */
  keep({ atStart = false }: { atStart?: boolean } = {}): void {
    if (this.rewriting !== null) return;
    const otherMarks = otherReadingsMarks(this.sqlite, READING_VERSION);
    if (otherMarks.length > 0 && !atStart) return;
    if (otherMarks.length === 0 && idsOfOtherReadings(this.sqlite, 1).length === 0) return;
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
    this.rewriting = this.rewrite().finally(() => {
      this.rewriting = null;
    });
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
