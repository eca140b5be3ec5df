/**
 * @module
 * Where log lines go by default: synchronous writes to a file descriptor (1, stdout), as pino's
 * `destination({ sync: true })` did. A line is on its way to the reader before the call returns,
 * and nothing is held in memory.
 *
 * A partial write is finished; a full non-blocking pipe (EAGAIN) is waited on and retried, so a
 * slow reader slows the writer rather than losing lines. A reader that went away (EPIPE) ends the
 * logging quietly instead of failing every request that logs.
 *
 * Any other write error (a full disk, an I/O error) drops the line and never reaches the caller:
 * logs grow with client traffic, and a log volume a client can fill must not stop the service
 * (before, the first request after the disk filled killed the process). The first failure and the
 * recovery are said once each on stderr, with the count of lines lost (some may have been cut
 * short); a line cut by the failure is ended before the next one, so it is the only broken line a
 * reader sees.
 */
import { fstatSync, writeSync } from "node:fs";
import { PIPE_BUF } from "./line-buffer";

export interface LogDestination {
  write(line: string): void;
  flush?(): void;
  /**
   * The most bytes one write may take and still arrive whole among other processes' writes: set
   * when the destination is a pipe or a socket, which several processes can share. The logger
   * cuts a longer line to fit (fit-line.ts); a file or a terminal takes any line whole.
   */
  readonly indivisibleBytes?: number;
}

/** PIPE_BUF for a pipe or socket, else undefined (a file or terminal, or an fd fstat cannot read). */
function indivisibleBytesOf(fd: number): number | undefined {
  try {
    const stat = fstatSync(fd);
    return stat.isFIFO() || stat.isSocket() ? PIPE_BUF : undefined;
  } catch {
    return undefined;
  }
}

const EAGAIN_WAIT_MS = 1;

function writeRetrying(fd: number, data: string | Uint8Array, offset: number): number {
  for (;;) {
    try {
      return typeof data === "string" ? writeSync(fd, data) : writeSync(fd, data, offset);
    } catch (error) {
      if ((error as { code?: string }).code !== "EAGAIN") throw error;
      Bun.sleepSync(EAGAIN_WAIT_MS);
    }
  }
}

function countLines(text: string): number {
  let lines = 0;
  for (let at = text.indexOf("\n"); at !== -1; at = text.indexOf("\n", at + 1)) lines++;
  return Math.max(1, lines);
}

export interface FdDestinationOptions {
  /** Told of a failing and a recovered log: stderr by default. */
  notice?: (message: string) => void;
}

function noticeOnStderr(message: string) {
  try {
    writeSync(2, `palisade: ${message}\n`);
  } catch {
    // stderr may be on the same full disk: nothing more to say.
  }
}

export function fdDestination(fd: number, options: FdDestinationOptions = {}): LogDestination {
  const notice = options.notice ?? noticeOnStderr;
  let closed = false;
  let dropped = 0;
  let cutLine = false;
  let failure = "";
  return {
    indivisibleBytes: indivisibleBytesOf(fd),
    write(line) {
      if (closed) return;
      let written = 0;
      try {
        // What a failure cut short is ended first, so the reader sees it as one bad line at most.
        const text = cutLine ? `\n${line}` : line;
        written = writeRetrying(fd, text, 0);
        const size = Buffer.byteLength(text);
        if (written < size) {
          const bytes = Buffer.from(text);
          while (written < size) written += writeRetrying(fd, bytes, written);
        }
        cutLine = false;
        if (dropped > 0) {
          notice(`log writes work again (${failure}); ${dropped} log line(s) were lost`);
          dropped = 0;
        }
      } catch (error) {
        const code = (error as { code?: string }).code ?? "unknown error";
        if (code === "EPIPE") {
          closed = true;
          return;
        }
        if (written > 0) cutLine = true;
        if (dropped === 0) {
          failure = code;
          notice(`log write failed (${code}); log lines are dropped until writes work again`);
        }
        // A write may be a batch of lines (the access log's).
        dropped += countLines(line);
      }
    },
  };
}
