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
 * writers while it copies the WAL back, and cuts the file to zero. When it cannot get there in
 * that time it is tried again at the next look.
 */
import type { Database } from "bun:sqlite";
import { statSync } from "node:fs";
import type { Logger } from "../logging/logger";
import { isDatabaseBusy } from "./busy";

export type WalCheck = "within" | "truncated" | "busy";

function walBytes(sqlite: Database): number {
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
  bytes = walBytes(sqlite),
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

export interface WalGuardOptions {
  /** Past this size the WAL is checkpointed and truncated; 0: never (Litestream). */
  limitBytes: number;
  logger: Logger;
  intervalMs?: number;
  /** Told the WAL's size at every look (db/background-checkpoint starts its thread from it). */
  onLook?: (walBytes: number) => void;
}

/** Looks at the WAL every `intervalMs` (250 ms by default); returns what stops it. */
export function startWalGuard(sqlite: Database, options: WalGuardOptions): () => void {
  const { limitBytes, logger, intervalMs = 250, onLook } = options;
  if (!sqlite.filename || sqlite.filename === ":memory:") return () => {};
  const timer = setInterval(() => {
    try {
      // One stat per look, for both.
      const bytes = walBytes(sqlite);
      onLook?.(bytes);
      if (limitBytes > 0 && checkpointIfLarge(sqlite, limitBytes, bytes) === "truncated") {
        logger.info({ limitBytes }, "WAL past its limit: checkpointed and truncated");
      }
    } catch (error) {
      logger.error({ err: error }, "WAL checkpoint failed");
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
