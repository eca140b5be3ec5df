/**
 * @module
 * Checkpoints off the event loop. In WAL mode SQLite copies committed pages back into the
 * database file in a checkpoint, run by whichever commit takes the WAL past `wal_autocheckpoint`
 * pages: with `synchronous = NORMAL` that commit also fsyncs the WAL and then the database file.
 * On the serving connection that is the event loop waiting on the disk, every request with it:
 * under a flood of new client addresses (a limiter row on a random page each) it was about half
 * of each insert's time here (60 µs an insert; 24 µs with no fsync at all).
 *
 * So once the service writes enough to matter, a worker thread with its own connection
 * (db/checkpoint-worker) copies frames back as they come, with PASSIVE checkpoints that never block
 * a writer, and takes their fsyncs on itself. The serving connection's own automatic checkpoint
 * stays as it was: it now finds nearly every frame copied and synced already, copies the few
 * written since, and lets the WAL restart from its beginning (which only a checkpoint that no
 * write overtook can). If the thread cannot run, the service checkpoints as before. Measured in
 * process on a grown table: a new client's limiter row 60 → 31–44 µs; 300,000 new clients through
 * the app 17 % sooner; over HTTP under a flood of new addresses, p99 latency 61–63 → 19–31 ms.
 * What stays on the event loop: the fsync of the WAL's header each time the
 * WAL restarts, and, after a reader held one snapshot for seconds, the serving connection's own
 * checkpoint of everything written meanwhile (it comes first: it runs at its next commit).
 *
 * The thread starts the first time the WAL guard finds the WAL past `startAtBytes` (a quarter of
 * the way to an automatic checkpoint), not at start: a thread costs ~7 MB, which a quiet service
 * never needs. Once started it stays, looking slowly while nothing is written. A checkpoint that
 * fails (a full disk) is logged once and retried every second until one works again (logged too);
 * only a thread that cannot open the database at all stops for good.
 */
import type { Logger } from "../logging/logger";
import type { FromCheckpointWorker, ToCheckpointWorker } from "./checkpoint-worker";
import { WAL_CHECKPOINT_PAGES } from "./client";

/** A quarter of the way to the serving connection's automatic checkpoint (4 KiB pages). */
export const BACKGROUND_START_BYTES = (WAL_CHECKPOINT_PAGES / 4) * 4096;

export interface BackgroundCheckpoints {
  /** The WAL's size, at each look of the WAL guard: past the threshold, the thread starts. */
  consider(walBytes: number): void;
  /** True from the thread's start until it stops or fails. */
  readonly running: boolean;
  /** Ends the thread (its connection closed first); nothing starts it again. */
  stop(): Promise<void>;
}

export interface BackgroundCheckpointOptions {
  /** The database file, as the serving connection opened it. */
  path: string;
  logger: Logger;
  /** @default BACKGROUND_START_BYTES */
  startAtBytes?: number;
  /** How often it looks while the WAL changes. @default 10 */
  busyIntervalMs?: number;
  /** How often it looks once the WAL has stopped changing. @default 100 */
  idleIntervalMs?: number;
  /**
   * The thread's script. The default, beside this file, is right when the service runs from
   * source; the executable holds it as an entry point of its own (scripts/build.ts), found from the
   * executable's entry (src/index.ts passes it), not from wherever the bundler put this code.
   */
  workerUrl?: URL;
}

/** How long `stop()` waits for the thread to close its connection before ending it anyway. */
const STOP_WAIT_MS = 2_000;

export function backgroundCheckpoints(options: BackgroundCheckpointOptions): BackgroundCheckpoints {
  const { path, logger } = options;
  const startAtBytes = options.startAtBytes ?? BACKGROUND_START_BYTES;
  let worker: Worker | null = null;
  let state: "waiting" | "running" | "failed" | "stopped" = "waiting";
  let stopped: (() => void) | null = null;

  const fail = (message: string) => {
    if (state === "failed" || state === "stopped") return;
    state = "failed";
    logger.error(
      { reason: message },
      "background checkpoints failed: the serving connection checkpoints alone",
    );
    worker?.terminate();
    worker = null;
  };

  const startThread = () => {
    state = "running";
    const thread = new Worker(
      options.workerUrl ?? new URL("./checkpoint-worker.ts", import.meta.url),
    );
    worker = thread;
    thread.unref();
    thread.onmessage = (event: MessageEvent<FromCheckpointWorker>) => {
      const message = event.data;
      if (message.type === "started") {
        logger.info({ startAtBytes }, "WAL growing: checkpoints moved to a background thread");
      } else if (message.type === "failing") {
        logger.error(
          { reason: message.message },
          "background checkpoints failing: the serving connection checkpoints alone until they work again",
        );
      } else if (message.type === "recovered") {
        logger.info("background checkpoints working again");
      } else if (message.type === "failed") fail(message.message);
      else if (message.type === "stopped") stopped?.();
    };
    thread.onerror = (event: ErrorEvent) => fail(event.message);
    const start: ToCheckpointWorker = {
      type: "start",
      path,
      busyIntervalMs: options.busyIntervalMs ?? 10,
      idleIntervalMs: options.idleIntervalMs ?? 100,
    };
    thread.postMessage(start);
  };

  return {
    consider(walBytes) {
      if (state !== "waiting" || walBytes < startAtBytes) return;
      try {
        startThread();
      } catch (error) {
        fail(error instanceof Error ? error.message : String(error));
      }
    },
    get running() {
      return state === "running";
    },
    async stop() {
      const thread = worker;
      const wasRunning = state === "running";
      state = "stopped";
      worker = null;
      if (!thread) return;
      if (wasRunning) {
        let timeout: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          stopped = resolve;
          timeout = setTimeout(resolve, STOP_WAIT_MS);
          thread.postMessage({ type: "stop" } satisfies ToCheckpointWorker);
        });
        clearTimeout(timeout);
      }
      thread.terminate();
    },
  };
}
