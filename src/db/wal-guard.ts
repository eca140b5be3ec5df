/**
 * @module
 * Keeps the WAL file bounded when several processes write the database.
 *
 * SQLite's automatic checkpoint (every WAL_CHECKPOINT_PAGES) is passive: it copies back only the
 * frames no other connection still reads, and the WAL restarts from its beginning only after a
 * checkpoint that copied them all. One process always gets there. Several processes writing
 * without pause (three on one file under a flood of new addresses, or all of them pruning a
 * million expired counters at once) keep another connection inside a transaction nearly all the
 * time, so no passive checkpoint completes and the WAL grew past 1 GB in a probe, filling the
 * disk while `journal_size_limit` waited for a reset that never came.
 *
 * So every process looks at the WAL's size a few times a second (a stat of the file) and, when it
 * is past the limit, runs a TRUNCATE checkpoint: it waits (at most the connection's busy timeout,
 * the serving process's 50 ms) for the other connections' transactions to end, holds off new
 * writers while it copies the WAL back, and cuts the file to zero.
 *
 * A long transaction on the file (an operator's `sqlite3` shell left open, a slow tool) holds a
 * snapshot that no checkpoint may copy past, and no TRUNCATE can succeed until it ends. Tried four
 * times a second, each attempt held every process's writers for its whole 50 ms wait and achieved
 * nothing (probe 46c F1: 2–4× fewer requests, chat turns 503). So after a TRUNCATE comes back busy
 * the guard backs off: it tries again after 1 s, then 2, 4 … at most every 30 s, and at once when
 * a PASSIVE checkpoint (which never waits and never blocks a writer) shows the frames copied back
 * moving past where they stood, the sign that the snapshot holding them is gone. What the operator
 * sees: one warning with the WAL's size once the WAL has been held for a second (again every five
 * minutes while it lasts), one info line when it is truncated after that, and the WAL's size as
 * the `db_wal_size_bytes` gauge.
 */
import type { Database } from "bun:sqlite";
import { statSync } from "node:fs";
import type { Logger } from "../logging/logger";
import { isDatabaseBusy } from "./busy";

export type WalCheck = "within" | "truncated" | "busy";
/** What a TRUNCATE checkpoint that ran came to. */
export type TruncateOutcome = Exclude<WalCheck, "within">;
export const TRUNCATE_OUTCOMES: readonly TruncateOutcome[] = ["truncated", "busy"];

/** The `-wal` file's size in bytes; 0 when there is none (a file at rest, `:memory:`). */
export function walFileBytes(sqlite: Database): number {
  if (!sqlite.filename || sqlite.filename === ":memory:") return 0;
  try {
    return statSync(`${sqlite.filename}-wal`).size;
  } catch {
    return 0;
  }
}

/**
 * Checkpoints and truncates the WAL when it is larger than `limitBytes`; `bytes` is its size when
 * the caller has just read it.
 */
export function checkpointIfLarge(
  sqlite: Database,
  limitBytes: number,
  bytes = walFileBytes(sqlite),
): WalCheck {
  if (bytes <= limitBytes) return "within";
  try {
    // One row: busy (1 when it could not finish), frames in the WAL, frames copied back.
    const [busy] = sqlite.query("PRAGMA wal_checkpoint(TRUNCATE)").values()[0] as number[];
    return busy === 0 ? "truncated" : "busy";
  } catch (error) {
    if (isDatabaseBusy(error)) return "busy";
    throw error;
  }
}

/** Where the WAL stands: frames in it, frames copied back to the database file. */
interface Backfill {
  frames: number;
  copied: number;
}

/** A PASSIVE checkpoint's answer; null when another checkpoint was running. */
function passiveCheckpoint(sqlite: Database): Backfill | null {
  try {
    const [, frames, copied] = sqlite
      .query("PRAGMA wal_checkpoint(PASSIVE)")
      .values()[0] as number[];
    return { frames: frames ?? -1, copied: copied ?? -1 };
  } catch (error) {
    if (isDatabaseBusy(error)) return null;
    throw error;
  }
}

/** The first wait after a busy TRUNCATE; each busy one after it doubles it, up to the most. */
export const WAL_RETRY_FIRST_MS = 1_000;
export const WAL_RETRY_MOST_MS = 30_000;
/** Held this long, the WAL is said to be held (a shorter wait is other writers' everyday traffic). */
export const WAL_HELD_WARN_AFTER_MS = 1_000;
/** Still held, it is said again this often. */
export const WAL_HELD_WARN_AGAIN_MS = 5 * 60_000;

export interface WalGuardOptions {
  /** Past this size the WAL is checkpointed and truncated; 0: never (Litestream). */
  limitBytes: number;
  logger: Logger;
  /** How often the timer looks. @default 250 */
  intervalMs?: number;
  /** Told the WAL's size at every look (db/background-checkpoint starts its thread from it). */
  onLook?: (walBytes: number) => void;
  /** Told each TRUNCATE checkpoint's outcome (the `db_wal_truncate_checkpoints_total` counter). */
  onTruncateCheckpoint?: (outcome: TruncateOutcome) => void;
  /**
   * Milliseconds on a clock that only moves forward (a step of the wall clock must not stall the
   * retries). @default performance.now
   */
  now?: () => number;
}

/** Since the first busy TRUNCATE, until one succeeds or the WAL is within the limit again. */
interface Held {
  since: number;
  attempts: number;
  nextAttemptAt: number;
  lastSeen: Backfill | null;
  largestBytes: number;
  warnedAt: number | null;
}

export interface WalGuard {
  /** Looks once: what the timer runs every `intervalMs`. */
  look(): void;
}

export function walGuard(sqlite: Database, options: WalGuardOptions): WalGuard {
  const { limitBytes, logger, onLook, onTruncateCheckpoint } = options;
  const now = options.now ?? (() => performance.now());
  let held: Held | null = null;

  const released = (state: Held) => {
    if (state.warnedAt === null) return;
    logger.info(
      {
        limitBytes,
        largestBytes: state.largestBytes,
        heldSeconds: Math.round((now() - state.since) / 1000),
      },
      "WAL truncated: the transaction that held it past WAL_TRUNCATE_MB has ended",
    );
  };

  const stillBusy = (bytes: number) => {
    const at = now();
    held ??= {
      since: at,
      attempts: 0,
      nextAttemptAt: at,
      lastSeen: null,
      largestBytes: bytes,
      warnedAt: null,
    };
    held.attempts++;
    held.nextAttemptAt =
      at + Math.min(WAL_RETRY_FIRST_MS * 2 ** (held.attempts - 1), WAL_RETRY_MOST_MS);
    // Where the copying stands now that this checkpoint copied what it could: the mark to move past.
    held.lastSeen = passiveCheckpoint(sqlite) ?? held.lastSeen;
    const warnDue =
      held.warnedAt === null
        ? at - held.since >= WAL_HELD_WARN_AFTER_MS
        : at - held.warnedAt >= WAL_HELD_WARN_AGAIN_MS;
    if (!warnDue) return;
    held.warnedAt = at;
    logger.warn(
      { walBytes: bytes, limitBytes, heldSeconds: Math.round((at - held.since) / 1000) },
      "WAL past WAL_TRUNCATE_MB and cannot be truncated: another connection's long transaction holds a snapshot",
    );
  };

  /**
   * Whether the WAL is copied back whole, or restarted: no snapshot holds it any more. Copying that
   * merely moved was taken for that: with long readers overlapping, each one's end moved it while
   * the next still held it, and TRUNCATE was tried at once, about every other look (probe 47b F2).
   */
  const copyingMoved = (state: Held): boolean => {
    const seen = passiveCheckpoint(sqlite);
    if (seen === null) return false;
    const before = state.lastSeen;
    state.lastSeen = seen;
    // Fewer frames: the WAL restarted from its beginning, which no reader's snapshot allows.
    const restarted = before !== null && seen.frames < before.frames;
    const copiedWhole = seen.frames >= 0 && seen.copied >= seen.frames;
    return restarted || (copiedWhole && (before === null || seen.copied > before.copied));
  };

  return {
    look() {
      const bytes = walFileBytes(sqlite);
      onLook?.(bytes);
      if (limitBytes <= 0) return;
      if (bytes <= limitBytes) {
        // Another process truncated it.
        if (held) released(held);
        held = null;
        return;
      }
      if (held) {
        held.largestBytes = Math.max(held.largestBytes, bytes);
        if (!copyingMoved(held) && now() < held.nextAttemptAt) return;
      }
      // Past the limit (above), so never "within": a TRUNCATE ran.
      const outcome = checkpointIfLarge(sqlite, limitBytes, bytes) as TruncateOutcome;
      onTruncateCheckpoint?.(outcome);
      if (outcome === "busy") return stillBusy(bytes);
      if (held?.warnedAt != null) released(held);
      else logger.info({ limitBytes }, "WAL past its limit: checkpointed and truncated");
      held = null;
    },
  };
}

/** Looks at the WAL every `intervalMs` (250 ms by default); returns what stops it. */
export function startWalGuard(sqlite: Database, options: WalGuardOptions): () => void {
  if (!sqlite.filename || sqlite.filename === ":memory:") return () => {};
  const guard = walGuard(sqlite, options);
  const timer = setInterval(() => {
    try {
      guard.look();
    } catch (error) {
      options.logger.error({ err: error }, "WAL checkpoint failed");
    }
  }, options.intervalMs ?? 250);
  timer.unref();
  return () => clearInterval(timer);
}
