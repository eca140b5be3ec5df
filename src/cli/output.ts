/**
 * @module
 * The CLI's lines, written through Bun's file sinks and drained before the process exits.
 * `process.stdout.write` to a pipe queues what the reader has not taken yet, and `process.exit`
 * dropped it: a command read through a pipe (`| less`, ssh) ended part-way, mid-line, exit 0
 * (probe 94h F1: 658 of 903 accounts; with a 3 MB value written into the file, every line after
 * it, its own "refused" mark too).
 */

/** What a line is written to: Bun's `FileSink` (`Bun.stdout.writer()`), or a test's own. */
export interface LineSink {
  write(text: string): unknown;
  flush(): number | Promise<number>;
}

export interface LineWriter {
  /** Writes the line and hands it on at once, so that a long command's lines appear as it goes. */
  line(text: string): void;
  /** Resolves once every line written has been taken by the reader, or the reader has gone. */
  drained(): Promise<void>;
  /**
   * Why the lines could not all be written, when not because the reader went away: a full disk or
   * an I/O error (`ENOSPC`, `EIO`…); null otherwise. A stdout closed before the start is not seen:
   * Bun opens /dev/null on it (probe 94j F1).
   */
  readonly failed: string | null;
}

/** A write error's code, or its first line. */
function errorCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string") return code;
  return String(error).split("\n")[0] ?? "unknown";
}

/**
 * Lines to `sink`. A reader that goes away (`| head`: EPIPE) ends the writing quietly, as it ends
 * any command-line tool: its broken pipe was a stack trace, thrown from a write or from a flush
 * finished later. Any other failure ends the writing too, and is kept in `failed` for the command
 * to say and exit non-zero on (probe 94i F1: a full disk cut a listing, or lost the key
 * `keys:create` shows once, and the command exited 0).
 */
export function lineWriter(sink: LineSink): LineWriter {
  let readerGone = false;
  let failed: string | null = null;
  const stop = (error: unknown) => {
    readerGone = true;
    const code = errorCode(error);
    if (code !== "EPIPE") failed ??= code;
  };
  const handedOn = (flushed: number | Promise<number>) => {
    if (flushed instanceof Promise) return flushed.then(() => undefined, stop);
    return Promise.resolve();
  };
  return {
    line(text) {
      if (readerGone) return;
      try {
        sink.write(`${text}\n`);
        void handedOn(sink.flush());
      } catch (error) {
        stop(error);
      }
    },
    async drained() {
      if (readerGone) return;
      try {
        await handedOn(sink.flush());
      } catch (error) {
        stop(error);
      }
    },
    get failed() {
      return failed;
    },
  };
}
