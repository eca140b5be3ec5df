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
}

/**
 * Lines to `sink`. A reader that goes away (`| head`) ends the writing quietly, as it ends any
 * command-line tool: its broken pipe was a stack trace, thrown from a write or from a flush
 * finished later.
 */
export function lineWriter(sink: LineSink): LineWriter {
  let readerGone = false;
  const handedOn = (flushed: number | Promise<number>) => {
    if (flushed instanceof Promise) {
      return flushed.then(
        () => undefined,
        () => {
          readerGone = true;
        },
      );
    }
    return Promise.resolve();
  };
  return {
    line(text) {
      if (readerGone) return;
      try {
        sink.write(`${text}\n`);
        void handedOn(sink.flush());
      } catch {
        readerGone = true;
      }
    },
    async drained() {
      if (readerGone) return;
      try {
        await handedOn(sink.flush());
      } catch {
        readerGone = true;
      }
    },
  };
}
