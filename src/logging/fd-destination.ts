/**
 * @module
 * Where log lines go by default: synchronous writes to a file descriptor (1, stdout), as pino's
 * `destination({ sync: true })` did. A line is on its way to the reader before the call returns,
 * so no line is lost when the process exits or dies, and nothing is held in memory.
 *
 * A partial write is finished; a full non-blocking pipe (EAGAIN) is waited on and retried, so a
 * slow reader slows the writer rather than losing lines. A reader that went away (EPIPE) ends the
 * logging quietly instead of failing every request that logs.
 */
import { writeSync } from "node:fs";

export interface LogDestination {
  write(line: string): void;
  flush?(): void;
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

export function fdDestination(fd: number): LogDestination {
  let closed = false;
  return {
    write(line) {
      if (closed) return;
      try {
        let written = writeRetrying(fd, line, 0);
        const size = Buffer.byteLength(line);
        if (written >= size) return;
        const bytes = Buffer.from(line);
        while (written < size) written += writeRetrying(fd, bytes, written);
      } catch (error) {
        if ((error as { code?: string }).code !== "EPIPE") throw error;
        closed = true;
      }
    },
  };
}
