/**
 * @module
 * What the background checkpointer's thread does between two looks (db/checkpoint-worker runs it):
 * a PASSIVE checkpoint, then the next look soon while the WAL changes, later once it has stopped.
 *
 * A checkpoint that fails for another reason than a lock (a full disk, an I/O error) is reported
 * once, then tried again every `retryMs`: the disk may have room again a minute later, and a
 * thread given up for good would leave the event loop the fsyncs until the next restart. The
 * first checkpoint that works again is reported too. A lock (another checkpoint running, in this
 * process or another) is no failure: it is tried again at once.
 */
import { isDatabaseBusy } from "./busy";

/** One PASSIVE checkpoint: [busy, frames in the WAL, frames copied back]. */
export type Checkpoint = () => readonly number[];

export type LoopReport = { type: "failing"; message: string } | { type: "recovered" };

export interface CheckpointLoopOptions {
  checkpoint: Checkpoint;
  report: (report: LoopReport) => void;
  busyIntervalMs: number;
  idleIntervalMs: number;
  retryMs: number;
}

export interface CheckpointLoop {
  /** Runs one look and schedules the next; returns the delay it chose. */
  look(): number;
  stop(): void;
}

export function checkpointLoop(options: CheckpointLoopOptions): CheckpointLoop {
  const { checkpoint, report, busyIntervalMs, idleIntervalMs, retryMs } = options;
  let lastLog = -1;
  let failing = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let stopped = false;

  const next = (): number => {
    try {
      const [, log = -1] = checkpoint();
      if (failing) {
        failing = false;
        report({ type: "recovered" });
      }
      const changing = log !== lastLog;
      lastLog = log;
      return changing ? busyIntervalMs : idleIntervalMs;
    } catch (error) {
      if (isDatabaseBusy(error)) return busyIntervalMs;
      if (!failing) {
        failing = true;
        report({
          type: "failing",
          message: error instanceof Error ? error.message : String(error),
        });
      }
      return retryMs;
    }
  };

  const loop: CheckpointLoop = {
    look() {
      if (stopped) return 0;
      if (timer) clearTimeout(timer);
      const delay = next();
      timer = setTimeout(() => loop.look(), delay);
      return delay;
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
  return loop;
}
