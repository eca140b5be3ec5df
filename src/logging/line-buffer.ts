/**
 * @module
 * Collects log lines and writes them in batches: when `maxBytes` have gathered or `maxDelayMs`
 * after the first, whichever comes first. A write(2) per access-log line cost ~2 µs of every
 * request here; a batch costs one. The price: lines of the last `maxDelayMs` are lost if the
 * process is killed (a clean shutdown flushes), so only the access log uses it, never the audit log.
 */

export interface LineSink {
  write(text: string): unknown;
}

export interface LineBuffer {
  write(line: string): void;
  flush(): void;
}

export function bufferLines(sink: LineSink, maxBytes = 16_384, maxDelayMs = 100): LineBuffer {
  let lines: string[] = [];
  let size = 0;
  let timer: Timer | null = null;
  const flush = () => {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (lines.length === 0) return;
    const text = lines.join("");
    lines = [];
    size = 0;
    sink.write(text);
  };
  return {
    write(line) {
      lines.push(line);
      size += line.length;
      if (size >= maxBytes) flush();
      else if (timer === null) {
        timer = setTimeout(flush, maxDelayMs);
        timer.unref?.();
      }
    },
    flush,
  };
}
