/**
 * @module
 * Collects log lines and writes them in batches: when the next line would take a batch past
 * `maxBytes`, or `maxDelayMs` after its first line, whichever comes first. A write(2) per
 * access-log line cost ~2 µs of every request here; a batch costs one. The price: lines of the
 * last `maxDelayMs` are lost if the process is killed outright (SIGKILL, a crash; a clean shutdown
 * flushes them), so only the access log uses it, never the audit log.
 *
 * A batch is at most PIPE_BUF (4096) bytes: the kernel writes that much to a pipe in one piece, so
 * several processes sharing one stdout pipe (as the scale-out's processes can) never splice their
 * lines into each other's. A line longer than that is written on its own.
 */

export interface LineSink {
  write(text: string): unknown;
}

export interface LineBuffer {
  write(line: string): void;
  flush(): void;
  /** Whether lines are waiting. */
  readonly pending: boolean;
}

/** The bytes a pipe takes in one indivisible write (POSIX PIPE_BUF; 4096 on Linux). */
export const PIPE_BUF = 4096;

export function bufferLines(sink: LineSink, maxBytes = PIPE_BUF, maxDelayMs = 100): LineBuffer {
  let lines: string[] = [];
  let size = 0;
  let timer: Timer | null = null;
  const flush = () => {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (lines.length === 0) return;
    const text = lines.length === 1 ? lines[0]! : lines.join("");
    lines = [];
    size = 0;
    sink.write(text);
  };
  return {
    write(line) {
      const bytes = Buffer.byteLength(line);
      if (size + bytes > maxBytes) flush();
      lines.push(line);
      size += bytes;
      if (size >= maxBytes) flush();
      else if (timer === null) {
        timer = setTimeout(flush, maxDelayMs);
        timer.unref?.();
      }
    },
    flush,
    get pending() {
      return lines.length > 0;
    },
  };
}
