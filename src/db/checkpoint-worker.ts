/**
 * @module
 * The background checkpointer's thread: a Bun Worker (started by db/background-checkpoint) with a
 * connection of its own to the database file, copying committed WAL frames back into the file
 * with SQLite's PASSIVE checkpoint, which never blocks a writer or a reader. While the WAL keeps
 * changing it looks every `busyIntervalMs`; once it has stopped changing, every `idleIntervalMs`.
 *
 * It only copies: it never writes a row, never restarts or truncates the WAL (the serving
 * connection's own automatic checkpoint and the WAL guard do), and never waits for a lock (a
 * checkpoint already running, in this process or another, is left to finish). A checkpoint that
 * fails (a full disk) is reported and retried every second (db/checkpoint-loop).
 */
import { Database, type Statement } from "bun:sqlite";
import { type CheckpointLoop, checkpointLoop, type LoopReport } from "./checkpoint-loop";

export interface CheckpointWorkerStart {
  type: "start";
  path: string;
  busyIntervalMs: number;
  idleIntervalMs: number;
}

export type ToCheckpointWorker = CheckpointWorkerStart | { type: "stop" };

/**
 * `failed`: it could not open the database and stopped for good; `failing`/`recovered`: a
 * checkpoint failed (a full disk), is retried every second, and worked again (db/checkpoint-loop).
 * Messages carry SQLite's own error text, never row content.
 */
export type FromCheckpointWorker =
  | { type: "started" }
  | { type: "failed"; message: string }
  | LoopReport
  | { type: "stopped" };

declare const self: Worker;

const post = (message: FromCheckpointWorker) => self.postMessage(message);

/** How long a failing checkpoint (a full disk) waits before it is tried again. */
const RETRY_MS = 1_000;

let sqlite: Database | null = null;
let checkpoint: Statement | null = null;
let loop: CheckpointLoop | null = null;

function stop(): void {
  loop?.stop();
  loop = null;
  checkpoint?.finalize();
  checkpoint = null;
  sqlite?.close();
  sqlite = null;
}

function start({ path, busyIntervalMs, idleIntervalMs }: CheckpointWorkerStart): void {
  try {
    // Never creates the file: the service made it; a file gone since is a failure to report.
    sqlite = new Database(path, { readwrite: true, create: false });
    sqlite.run("PRAGMA busy_timeout = 0");
  } catch (error) {
    stop();
    post({ type: "failed", message: error instanceof Error ? error.message : String(error) });
    return;
  }
  const statement = sqlite.prepare("PRAGMA wal_checkpoint(PASSIVE)");
  checkpoint = statement;
  loop = checkpointLoop({
    checkpoint: () => statement.values()[0] as number[],
    report: post,
    busyIntervalMs,
    idleIntervalMs,
    retryMs: RETRY_MS,
  });
  post({ type: "started" });
  loop.look();
}

self.onmessage = (event: MessageEvent<ToCheckpointWorker>) => {
  const message = event.data;
  if (message.type === "start" && !sqlite) start(message);
  else if (message.type === "stop") {
    stop();
    post({ type: "stopped" });
  }
};
