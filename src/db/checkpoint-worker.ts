/**
 * @module
 * The background checkpointer's thread: a Bun Worker (started by db/background-checkpoint) with a
 * connection of its own to the database file, copying committed WAL frames back into the file
 * with SQLite's PASSIVE checkpoint, which never blocks a writer or a reader. While the WAL keeps
 * changing it looks every `busyIntervalMs`; once it has stopped changing, every `idleIntervalMs`.
 *
 * It only copies: it never writes a row, never restarts or truncates the WAL (the serving
 * connection's own automatic checkpoint and the WAL guard do), and never waits for a lock (a
 * checkpoint already running, in this process or another, is left to finish).
 */
import { Database, type Statement } from "bun:sqlite";

export interface CheckpointWorkerStart {
  type: "start";
  path: string;
  busyIntervalMs: number;
  idleIntervalMs: number;
}

export type ToCheckpointWorker = CheckpointWorkerStart | { type: "stop" };

/** `failed`: it stopped for good (the message has no row content: SQLite's own error text). */
export type FromCheckpointWorker =
  | { type: "started" }
  | { type: "failed"; message: string }
  | { type: "stopped" };

declare const self: Worker;

const post = (message: FromCheckpointWorker) => self.postMessage(message);

const isBusy = (error: unknown) =>
  error instanceof Error &&
  "code" in error &&
  typeof error.code === "string" &&
  (error.code.startsWith("SQLITE_BUSY") || error.code.startsWith("SQLITE_LOCKED"));

let sqlite: Database | null = null;
let checkpoint: Statement | null = null;
let timer: ReturnType<typeof setTimeout> | null = null;

function stop(): void {
  if (timer) clearTimeout(timer);
  timer = null;
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
  let lastLog = -1;
  const look = () => {
    if (!sqlite) return;
    let changing = false;
    try {
      // One row: busy (1 when it could not copy everything), frames in the WAL, frames copied.
      const [, log] = statement.values()[0] as number[];
      changing = log !== lastLog;
      lastLog = log ?? -1;
    } catch (error) {
      if (!isBusy(error)) {
        stop();
        post({ type: "failed", message: error instanceof Error ? error.message : String(error) });
        return;
      }
      changing = true;
    }
    timer = setTimeout(look, changing ? busyIntervalMs : idleIntervalMs);
  };
  post({ type: "started" });
  look();
}

self.onmessage = (event: MessageEvent<ToCheckpointWorker>) => {
  const message = event.data;
  if (message.type === "start" && !sqlite) start(message);
  else if (message.type === "stop") {
    stop();
    post({ type: "stopped" });
  }
};
