/**
 * The CLI's lines reach a reader that takes them slowly, whole, and a reader that goes away ends
 * the writing quietly (probe 94h F1: `process.exit` dropped what a pipe had not taken yet).
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LineSink, lineWriter } from "../../src/cli/output";
import { REPO_ROOT, runToExit } from "../support/process";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

test("a command read through a pipe by a slow reader is read whole before the process exits (probe 94h F1)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-cli-output-"));
  dirs.push(dir);
  const env = { DATABASE_PATH: join(dir, "p.db") };
  const made = await runToExit(
    ["bun", "src/cli/index.ts", "users:create", "--email", "admin@example.com"],
    env,
  );
  expect(made.code).toBe(0);
  // Far more than a pipe holds (64 KB): rows written into the file, listed as refused.
  const file = new Database(env.DATABASE_PATH);
  file.transaction(() => {
    for (let i = 0; i < 3_000; i++) {
      file.run(
        `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
         VALUES (?, ?, ?, 'x', 'user', 'x', 1, 1)`,
        [`row-${i}`, `user${i}@example.com`, `user${i}@example.com`],
      );
    }
  })();
  file.close();
  // Through a shell's pipe, as `| less` or ssh reads it (a Bun.spawn pipe is read by the parent at
  // once, and never fills), to a reader that starts once the command has exited, or after 4 s if
  // it waits for the reader (as it now does).
  const exited = join(dir, "exited");
  const reader = `i=0; while [ ! -e ${exited} ] && [ $i -lt 40 ]; do sleep 0.1; i=$((i+1)); done; cat`;
  const command = `(bun src/cli/index.ts users:list; touch ${exited}) | (${reader})`;
  const proc = Bun.spawn(["sh", "-c", command], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "ignore",
  });
  const listed = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const lines = listed.split("\n").filter((line) => line !== "");
  expect(lines).toHaveLength(3_001);
  for (const last of ["user2999@example.com", "admin@example.com"]) {
    expect(lines.filter((line) => line.includes(` ${last} `))).toHaveLength(1);
  }
}, 20_000);

test("lines are handed on as they are written; a reader gone, by a write or a flush failing later, ends the writing without an error", async () => {
  const written: string[] = [];
  let flushes = 0;
  const steady: LineSink = {
    write: (text) => written.push(text),
    flush: () => {
      flushes++;
      return 0;
    },
  };
  const out = lineWriter(steady);
  out.line("one");
  out.line("two");
  await out.drained();
  expect(written).toEqual(["one\n", "two\n"]);
  expect(flushes).toBe(3);

  // A pipe closed by its reader: the write throws (EPIPE), and nothing more is tried.
  let writes = 0;
  const closedAtOnce: LineSink = {
    write: () => {
      writes++;
      throw Object.assign(new Error("broken pipe"), { code: "EPIPE" });
    },
    flush: () => 0,
  };
  const gone = lineWriter(closedAtOnce);
  gone.line("one");
  gone.line("two");
  await gone.drained();
  expect(writes).toBe(1);
  expect(gone.failed).toBeNull();

  // A full disk is no reader gone: kept, for the command to say and fail on (probe 94i F1).
  const full = lineWriter({
    write: () => {
      throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" });
    },
    flush: () => 0,
  });
  full.line("one");
  await full.drained();
  expect(full.failed).toBe("ENOSPC");

  // Closed while a flush was pending: its rejection is taken, never left unhandled.
  let later = 0;
  const closedLater: LineSink = {
    write: () => {
      later++;
    },
    flush: () => Promise.reject(Object.assign(new Error("broken pipe"), { code: "EPIPE" })),
  };
  const slow = lineWriter(closedLater);
  slow.line("one");
  await Bun.sleep(0);
  slow.line("two");
  await slow.drained();
  expect(later).toBe(1);
});

test("output that cannot be written (/dev/full) fails the command, saying so, where it exited 0 (probe 94i F1)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "palisade-cli-output-"));
  dirs.push(dir);
  const env = { DATABASE_PATH: join(dir, "p.db") };
  const proc = Bun.spawn(
    ["bun", "src/cli/index.ts", "users:create", "--email", "full@example.com"],
    {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdin: "ignore",
      stdout: Bun.file("/dev/full"),
      stderr: "pipe",
    },
  );
  const stderr = await new Response(proc.stderr).text();
  expect(await proc.exited).toBe(1);
  expect(stderr).toContain("palisade: the output could not be written (");
});
