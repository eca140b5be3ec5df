import { afterEach, expect, test } from "bun:test";
import { closeSync, constants, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fdDestination } from "../../src/logging/fd-destination";
import { tempDir } from "../support/app";

const ROOT = join(import.meta.dir, "..", "..");

let dir: ReturnType<typeof tempDir> | null = null;
afterEach(() => {
  dir?.remove();
  dir = null;
});

function fifo(name: string): string {
  dir ??= tempDir("palisade-fd-");
  const path = join(dir.path, name);
  expect(Bun.spawnSync(["mkfifo", path]).exitCode).toBe(0);
  return path;
}

test("lines are written in order, whole, to the file descriptor", () => {
  dir = tempDir("palisade-fd-");
  const path = join(dir.path, "log");
  const fd = openSync(path, "a");
  const destination = fdDestination(fd);
  destination.write('{"msg":"one"}\n');
  destination.write('{"msg":"deux é ✓"}\n');
  closeSync(fd);
  expect(readFileSync(path, "utf8")).toBe('{"msg":"one"}\n{"msg":"deux é ✓"}\n');
});

test("a full non-blocking pipe is waited on: a line larger than the pipe arrives whole, after a slow reader", async () => {
  const path = fifo("slow");
  const out = join(dir!.path, "out");
  // The reader starts late, so the writer meets a full pipe (a partial write, then EAGAIN).
  const reader = Bun.spawn(["sh", "-c", `sleep 0.2; cat '${path}' > '${out}'`]);
  const keepOpen = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  const line = `{"msg":"${"é".repeat(100_000)}"}\n`;
  const destination = fdDestination(fd);
  destination.write(line);
  destination.write(line);
  closeSync(fd);
  closeSync(keepOpen);
  expect(await reader.exited).toBe(0);
  expect(readFileSync(out, "utf8")).toBe(line + line);
});

test("a reader that went away (EPIPE) ends the logging quietly, not the caller", () => {
  const path = fifo("gone");
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  closeSync(reader);
  const destination = fdDestination(fd);
  expect(() => destination.write("lost\n")).not.toThrow();
  expect(() => destination.write("lost too\n")).not.toThrow();
  closeSync(fd);
});

test("a full disk (ENOSPC) drops lines without failing the caller, and says so once", () => {
  const fd = openSync("/dev/full", "w");
  const notices: string[] = [];
  const destination = fdDestination(fd, { notice: (message) => notices.push(message) });
  for (let i = 0; i < 5; i++) expect(() => destination.write(`{"i":${i}}\n`)).not.toThrow();
  closeSync(fd);
  expect(notices).toEqual([
    "log write failed (ENOSPC); log lines are dropped until writes work again",
  ]);
});

test("the recovery notice counts the lines lost, a batch of them counting each", () => {
  dir = tempDir("palisade-fd-");
  const path = join(dir.path, "log");
  const fd = openSync(path, "a");
  const notices: string[] = [];
  // The same descriptor number, first closed (EBADF), then open again: a disk that failed, then works.
  closeSync(fd);
  const destination = fdDestination(fd, { notice: (message) => notices.push(message) });
  destination.write('{"a":1}\n{"a":2}\n{"a":3}\n');
  destination.write('{"b":1}\n');
  const reopened = openSync(path, "a");
  try {
    if (reopened !== fd) return; // Another descriptor took the number: nothing to check here.
    destination.write('{"c":1}\n');
    expect(notices).toEqual([
      "log write failed (EBADF); log lines are dropped until writes work again",
      "log writes work again (EBADF); 4 log line(s) were lost",
    ]);
    expect(readFileSync(path, "utf8")).toBe('{"c":1}\n');
  } finally {
    closeSync(reopened);
  }
});

test("any other write failure (a descriptor not open for writing) is dropped too, not thrown", () => {
  dir = tempDir("palisade-fd-");
  const fd = openSync(join(dir.path, "read-only"), "w+");
  closeSync(fd);
  const readOnly = openSync(join(dir.path, "read-only"), "r");
  const notices: string[] = [];
  const destination = fdDestination(readOnly, { notice: (message) => notices.push(message) });
  expect(() => destination.write("x\n")).not.toThrow();
  closeSync(readOnly);
  expect(notices).toEqual([
    "log write failed (EBADF); log lines are dropped until writes work again",
  ]);
});

test("a service whose stdout is a full disk keeps working and says why on stderr", async () => {
  const script = [
    'import { createLogger } from "./src/logging/logger";',
    'const logger = createLogger({ level: "info" });',
    'for (let i = 0; i < 100; i++) logger.info({ i }, "line");',
    "logger.batched.write('{\"access\":1}\\n');",
    "logger.flush();",
    'process.stderr.write("still here\\n");',
  ].join("\n");
  const full = openSync("/dev/full", "w");
  const proc = Bun.spawn(["bun", "-e", script], { cwd: ROOT, stdout: full, stderr: "pipe" });
  const stderr = await new Response(proc.stderr).text();
  closeSync(full);
  expect(await proc.exited).toBe(0);
  expect(stderr).toBe(
    "palisade: log write failed (ENOSPC); log lines are dropped until writes work again\nstill here\n",
  );
});

test("the default logger writes each line to stdout before the call returns: none is lost when the process exits at once", async () => {
  const script = [
    'import { createLogger } from "./src/logging/logger";',
    'const logger = createLogger({ level: "info" });',
    'for (let i = 0; i < 2000; i++) logger.info({ i }, "line");',
    'logger.error("last");',
    "process.exit(3);",
  ].join("\n");
  const proc = Bun.spawn(["bun", "-e", script], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const text = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(3);
  const lines = text.split("\n").filter((line) => line !== "");
  expect(lines).toHaveLength(2001);
  expect(lines.slice(0, 2000).map((line) => JSON.parse(line).i)).toEqual(
    Array.from({ length: 2000 }, (_, i) => i),
  );
  expect(JSON.parse(lines[2000]!)).toMatchObject({ level: "error", msg: "last" });
}, 20_000);
