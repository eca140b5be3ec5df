/**
 * @module
 * Whether `DATABASE_PATH` still names the database this process has open. A file deleted, moved
 * or replaced while the service runs goes on answering through the open handle: every write lands
 * in a file no path names, lost at the stop, and the next start makes a new empty database (probe
 * 83c F3: `/ready` stayed 200 and nothing was logged). Its `-wal` deleted leaves the writes since
 * the last checkpoint in a file no other process or command sees, lost at a crash; its `-shm`
 * deleted lets another process make a second one, and the two then disagree on the WAL.
 *
 * A connection in WAL mode keeps both beside the file for as long as it is open (SQLite removes
 * them only when the last connection closes), so either one missing is someone's doing.
 */
import type { Database } from "bun:sqlite";
import { realpathSync, statSync } from "node:fs";
import type { Logger } from "../logging/logger";

/** How often the service looks (a stat of three files). */
export const FILE_LOOK_INTERVAL_MS = 1_000;
/** A problem still there is logged again after this long. */
const REPEAT_AFTER_MS = 5 * 60_000;

export interface DatabaseFileWatch {
  /** What is wrong with the files `DATABASE_PATH` names, or null when they are the open ones. */
  problem(): string | null;
}

function identity(path: string): { dev: number; ino: number } | null {
  try {
    const { dev, ino } = statSync(path);
    return { dev, ino };
  } catch {
    return null;
  }
}

/**
 * The file at `sqlite.filename` as it is now, remembered as the one opened: call it right after the
 * open. Null for `:memory:`.
 */
export function databaseFileWatch(sqlite: Database): DatabaseFileWatch | null {
  const path = sqlite.filename;
  if (!path || path === ":memory:") return null;
  const opened = identity(path);
  if (opened === null) return null;
  // SQLite makes the -wal and -shm beside the file a symbolic link names, not beside the link
  // (probe 83e F1: a DATABASE_PATH linked to a bigger disk was "-wal deleted" at every look).
  let resolved = path;
  try {
    resolved = realpathSync(path);
  } catch {
    // Gone already: the look below says so.
  }
  const companions = (["-wal", "-shm"] as const).map((suffix) => ({
    suffix,
    path: `${resolved}${suffix}`,
    opened: identity(`${resolved}${suffix}`),
  }));
  const same = (a: { dev: number; ino: number }, b: { dev: number; ino: number }) =>
    a.dev === b.dev && a.ino === b.ino;
  return {
    problem() {
      const now = identity(path);
      if (now === null) {
        return "DATABASE_PATH no longer names a file: the database this process has open was deleted or moved while it ran; what it writes now is lost when it stops, and the next start makes a new empty database: put the file back (or restore a backup) and restart";
      }
      if (!same(now, opened)) {
        return "DATABASE_PATH names another file than the database this process has open (replaced while it ran): what this process writes goes to the old one; restart to serve the new one";
      }
      for (const { suffix, path: companionPath, opened: companion } of companions) {
        // Only one there when this process looked first: where none was, none is missed.
        if (companion === null) continue;
        const current = identity(companionPath);
        // Made again by another process after a deletion: not the one this process writes.
        if (current === null || !same(current, companion)) {
          return `the database's ${suffix} file was deleted or replaced while the service ran: writes since the last checkpoint are in no file another process or command sees, and are lost if this process dies; stop every process on the file gracefully (a checkpoint at the stop writes them back), then start again`;
        }
      }
      return null;
    },
  };
}

/**
 * Looks every FILE_LOOK_INTERVAL_MS and logs a problem at error level when it appears (again every
 * five minutes while it lasts, and once at info when it is gone); returns what stops it.
 */
export function startDatabaseFileWatch(
  watch: DatabaseFileWatch | null,
  logger: Pick<Logger, "error" | "info">,
  intervalMs = FILE_LOOK_INTERVAL_MS,
): () => void {
  if (watch === null || intervalMs <= 0) return () => {};
  let said: { problem: string; at: number } | null = null;
  const timer = setInterval(() => {
    const problem = watch.problem();
    const at = performance.now();
    if (problem === null) {
      if (said !== null) logger.info("the database files are in place again");
      said = null;
      return;
    }
    if (said?.problem === problem && at - said.at < REPEAT_AFTER_MS) return;
    said = { problem, at };
    logger.error(problem);
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
