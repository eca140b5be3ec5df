import { expect, test } from "bun:test";
import { closeSync, constants, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fitLine } from "../../src/logging/fit-line";
import { PIPE_BUF } from "../../src/logging/line-buffer";
import { createLogger } from "../../src/logging/logger";
import { tempDir } from "../support/app";

const ROOT = join(import.meta.dir, "..", "..");
const bytes = (text: string) => Buffer.byteLength(text);

test("a line within the limit is written as it is", () => {
  const line = `{"level":"info","msg":"${"é".repeat(1500)}"}\n`;
  expect(bytes(line)).toBeLessThanOrEqual(PIPE_BUF);
  expect(fitLine(line, PIPE_BUF)).toBe(line);
});

test("a long error is cut to the limit: every field kept, the stack's start kept, marked truncated", () => {
  const stack = `Error: boom\n${Array.from({ length: 400 }, (_, i) => `    at frame${i} (/app/src/file${i}.ts:${i}:1)`).join("\n")}`;
  const line = `${JSON.stringify({
    level: "error",
    time: "2026-11-29T00:00:00.000Z",
    service: "palisade",
    requestId: "r-1",
    err: { type: "Error", message: "boom", stack },
    msg: "request failed",
  })}\n`;
  expect(bytes(line)).toBeGreaterThan(PIPE_BUF);
  const fitted = fitLine(line, PIPE_BUF);
  expect(bytes(fitted)).toBeLessThanOrEqual(PIPE_BUF);
  expect(fitted.endsWith("}\n")).toBe(true);
  expect(fitted.indexOf("\n")).toBe(fitted.length - 1);
  const record = JSON.parse(fitted);
  expect(record).toMatchObject({
    level: "error",
    time: "2026-11-29T00:00:00.000Z",
    service: "palisade",
    requestId: "r-1",
    err: { type: "Error", message: "boom" },
    msg: "request failed",
    truncated: true,
  });
  expect(record.err.stack.startsWith("Error: boom\n    at frame0 (/app/src/file0.ts:0:1)")).toBe(
    true,
  );
  expect(record.err.stack.endsWith("…")).toBe(true);
  // No more is cut than the limit asks for.
  expect(bytes(fitted)).toBeGreaterThan(PIPE_BUF - 8);
});

test("multibyte and escaped text is cut between characters, never inside one", () => {
  for (const unit of ["😀", "é", "\u0001", '"', "\\", "\u2028"]) {
    const line = `${JSON.stringify({ level: "warn", a: unit.repeat(3000), b: unit.repeat(2000) })}\n`;
    const fitted = fitLine(line, PIPE_BUF);
    expect(bytes(fitted)).toBeLessThanOrEqual(PIPE_BUF);
    const record = JSON.parse(fitted);
    expect(record.truncated).toBe(true);
    expect(record.a.endsWith("…")).toBe(true);
    expect(bytes(fitted)).toBeGreaterThan(PIPE_BUF - 8);
    for (const field of [record.a, record.b] as string[]) {
      const kept = field.endsWith("…") ? field.slice(0, -1) : field;
      // Whole characters only: no lone surrogate survives, and the text is the start of the original.
      expect(kept).toBe(unit.repeat(kept.length / unit.length));
      expect(kept.isWellFormed()).toBe(true);
    }
  }
});

test("a line with more small fields than fit keeps its level, time, service, request id and message", () => {
  const fields: Record<string, string> = {};
  for (let i = 0; i < 600; i++) fields[`field${i}`] = `value${i}`;
  const line = `${JSON.stringify({ level: "info", time: "t", service: "palisade", requestId: "r", ...fields, msg: "many" })}\n`;
  const fitted = fitLine(line, PIPE_BUF);
  expect(bytes(fitted)).toBeLessThanOrEqual(PIPE_BUF);
  expect(JSON.parse(fitted)).toEqual({
    truncated: true,
    level: "info",
    time: "t",
    service: "palisade",
    requestId: "r",
    msg: "many",
  });
});

test("the logger cuts lines only for a destination that says it must", () => {
  const written: string[] = [];
  const whole = createLogger({
    level: "info",
    destination: { write: (line) => written.push(line) },
  });
  whole.error({ err: Object.assign(new Error("long"), { stack: "x".repeat(10_000) }) }, "failed");
  expect(bytes(written[0]!)).toBeGreaterThan(10_000);

  const cut = createLogger({
    level: "info",
    destination: { write: (line) => written.push(line), indivisibleBytes: PIPE_BUF },
  });
  cut.error({ err: Object.assign(new Error("long"), { stack: "x".repeat(10_000) }) }, "failed");
  expect(bytes(written[1]!)).toBeLessThanOrEqual(PIPE_BUF);
  expect(JSON.parse(written[1]!)).toMatchObject({ level: "error", msg: "failed", truncated: true });
});

test("two processes writing long error lines into one shared stdout pipe: every line arrives whole", async () => {
  // Each child logs errors with 20 KB stacks to its stdout: one non-blocking pipe both share, as
  // processes started by one supervisor do. The reader starts late, so the pipe is full and each
  // write is taken in pieces: without the cut, the two processes' pieces mix inside lines.
  const dir = tempDir("palisade-fit-");
  try {
    const fifo = join(dir.path, "shared");
    const out = join(dir.path, "out");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const reader = Bun.spawn(["sh", "-c", `sleep 0.5; cat '${fifo}' > '${out}'`]);
    const keepOpen = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const shared = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    const child = (name: string) =>
      [
        'import { createLogger } from "./src/logging/logger";',
        'const logger = createLogger({ level: "info" });',
        "for (let i = 0; i < 40; i++) {",
        `  const error = Object.assign(new Error("${name} " + i), { stack: "${name}".repeat(20000) });`,
        `  logger.error({ err: error, child: "${name}", i }, "failed");`,
        "}",
      ].join("\n");
    const writers = ["a", "b"].map((name) =>
      Bun.spawn(["bun", "-e", child(name)], { cwd: ROOT, stdout: shared, stderr: "inherit" }),
    );
    closeSync(shared);
    for (const writer of writers) expect(await writer.exited).toBe(0);
    closeSync(keepOpen);
    expect(await reader.exited).toBe(0);
    const lines = readFileSync(out, "utf8")
      .split("\n")
      .filter((line) => line !== "");
    // Whole lines first (a spliced one is not JSON), then each one's size and content.
    const records = lines.map((line) => JSON.parse(line));
    expect(records).toHaveLength(80);
    expect(new Set(records.map((record) => `${record.child}${record.i}`)).size).toBe(80);
    for (const [index, record] of records.entries()) {
      expect(Buffer.byteLength(lines[index]!) + 1).toBeLessThanOrEqual(PIPE_BUF);
      expect(record.truncated).toBe(true);
      expect(record.err.stack.startsWith(record.child.repeat(100))).toBe(true);
    }
  } finally {
    dir.remove();
  }
}, 30_000);
