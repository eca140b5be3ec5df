/**
 * @module
 * Reads a file the configuration names (a Docker secret, the FAQ) only when it is a regular file of
 * at most `maxBytes`: a FIFO would hang the start with nothing said, and `/dev/zero` or a log
 * given by mistake would fill the memory. Opened without blocking, checked on the open file
 * (`fstat`), so what is read is what was checked.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";

/** Why a named file was not read, as a short code for a one-line refusal. */
export class UnreadableFile extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = "UnreadableFile";
  }
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/** The file's text, UTF-8 as it must be (a BOM dropped). */
export function readBoundedFile(path: string, maxBytes: number): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw new UnreadableFile((error as NodeJS.ErrnoException).code ?? "unreadable");
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new UnreadableFile("not a regular file");
    if (stat.size > maxBytes) throw new UnreadableFile(`larger than ${maxBytes} bytes`);
    // One byte more than allowed: a file that grew since the fstat is refused, not cut.
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
      if (length > maxBytes) throw new UnreadableFile(`larger than ${maxBytes} bytes`);
    }
    // Strictly: a lossy decode made every invalid byte U+FFFD, so a raw 20-byte random secret
    // passed the 32-byte minimum as ~40 bytes of text, and two files differing in each high byte
    // were one key (probe 71a F3).
    try {
      return STRICT_UTF8.decode(buffer.subarray(0, length));
    } catch {
      throw new UnreadableFile("not UTF-8 text");
    }
  } catch (error) {
    if (error instanceof UnreadableFile) throw error;
    throw new UnreadableFile((error as NodeJS.ErrnoException).code ?? "unreadable");
  } finally {
    closeSync(fd);
  }
}
