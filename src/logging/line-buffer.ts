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
  // In UTF-16 units, which never exceed the UTF-8 bytes: the bytes are counted once a batch, at
  // its write, instead of once a line.
  let size = 0;
  let timer: Timer | null = null;
  const flush = () => {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (lines.length === 0) return;
    const batch = lines;
    lines = [];
    size = 0;
    if (batch.length === 1) {
      sink.write(batch[0]!);
      return;
    }
    const text = batch.join("");
    if (Buffer.byteLength(text) <= maxBytes) sink.write(text);
    else writeByBytes(sink, batch, maxBytes);
  };
  return {
    write(line) {
      if (size + line.length > maxBytes) flush();
      lines.push(line);
      size += line.length;
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

/** A batch whose characters take more bytes than one write holds, in writes that each fit. */
function writeByBytes(sink: LineSink, batch: readonly string[], maxBytes: number): void {
  let part: string[] = [];
  let bytes = 0;
  for (const line of batch) {
    const lineBytes = Buffer.byteLength(line);
    if (part.length > 0 && bytes + lineBytes > maxBytes) {
      sink.write(part.join(""));
      part = [];
      bytes = 0;
    }
    part.push(line);
    bytes += lineBytes;
  }
  if (part.length > 0) sink.write(part.join(""));
}
