import { expect, test } from "bun:test";
import { bufferLines, PIPE_BUF } from "../../src/logging/line-buffer";
import { createLogger } from "../../src/logging/logger";
import { LogCapture } from "../support/app";

const line = (n: number, bytes: number) => `{"n":${n},"pad":"${"é".repeat((bytes - 20) / 2)}"}\n`;

test("a batch never passes PIPE_BUF bytes and holds whole lines; a longer line is written alone", () => {
  const writes: string[] = [];
  const buffer = bufferLines({ write: (text) => writes.push(text) });
  const lines = Array.from({ length: 40 }, (_, n) => line(n, 900));
  const long = line(99, 9000);
  for (const text of lines.slice(0, 20)) buffer.write(text);
  buffer.write(long);
  for (const text of lines.slice(20)) buffer.write(text);
  buffer.flush();
  for (const text of writes) {
    if (text !== long) expect(Buffer.byteLength(text)).toBeLessThanOrEqual(PIPE_BUF);
    expect(text.endsWith("\n")).toBe(true);
  }
  expect(writes).toContain(long);
  expect(writes.join("")).toBe([...lines.slice(0, 20), long, ...lines.slice(20)].join(""));
});

test("waiting lines are written after the delay, or at once by flush", async () => {
  const writes: string[] = [];
  const buffer = bufferLines({ write: (text) => writes.push(text) }, PIPE_BUF, 20);
  buffer.write("a\n");
  expect(buffer.pending).toBe(true);
  expect(writes).toEqual([]);
  await Bun.sleep(60);
  expect(writes).toEqual(["a\n"]);
  buffer.write("b\n");
  buffer.flush();
  expect(writes).toEqual(["a\n", "b\n"]);
  expect(buffer.pending).toBe(false);
});

test("a logger writes its waiting batched lines before any line of its own, and flush writes them", () => {
  const capture = new LogCapture();
  const logger = createLogger({ level: "info", destination: capture });
  logger.batched.write('{"access":1}\n');
  logger.child({ part: "x" }).warn("after");
  logger.batched.write('{"access":2}\n');
  expect(capture.entries.map((entry) => entry.access ?? entry.msg)).toEqual([1, "after"]);
  logger.flush();
  expect(capture.entries.map((entry) => entry.access ?? entry.msg)).toEqual([1, "after", 2]);
});

test("a line below the level does not write the waiting lines early", () => {
  const capture = new LogCapture();
  const logger = createLogger({ level: "warn", destination: capture });
  logger.batched.write('{"access":1}\n');
  logger.info("ignored");
  expect(capture.raw).toEqual([]);
  logger.flush();
  expect(capture.entries).toEqual([{ access: 1 }]);
});

test("ASCII lines fill a batch to PIPE_BUF; characters of several bytes split it where it would pass", () => {
  const writes: string[] = [];
  const buffer = bufferLines({ write: (text) => writes.push(text) });
  const ascii = Array.from(
    { length: 40 },
    (_, n) => `{"n":${String(n).padStart(2, "0")},"pad":"${"a".repeat(182)}"}\n`,
  );
  expect(ascii.every((text) => text.length === 200)).toBe(true);
  for (const text of ascii) buffer.write(text);
  buffer.flush();
  expect(writes.map((text) => Buffer.byteLength(text))).toEqual([4000, 4000]);
  // 3 bytes a character: a batch that fits in characters is written in parts that fit in bytes.
  writes.length = 0;
  const euro = Array.from({ length: 6 }, (_, n) => `${n}${"€".repeat(598)}\n`);
  for (const text of euro) buffer.write(text);
  buffer.flush();
  for (const text of writes) expect(Buffer.byteLength(text)).toBeLessThanOrEqual(PIPE_BUF);
  expect(writes.length).toBeGreaterThan(1);
  expect(writes.join("")).toBe(euro.join(""));
});
