/**
 * `bun run build` starts the executable it compiled once, to record the order its start runs the
 * bytecode in (scripts/build.ts). A build interrupted then (Ctrl-C, a cancelled CI job, `timeout`)
 * must take that development-mode service and its scratch directory with it (re-probe 15c F3).
 */
import { expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { REPO_ROOT } from "../support/process";
import { waitFor } from "../support/wait";

/** The pid of the process whose command line is exactly `executable`, or null. */
function processRunning(executable: string): number | null {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (argv[0] === executable) return Number(entry);
    } catch {
      // Gone between the listing and the read.
    }
  }
  return null;
}

function environmentOf(pid: number): Record<string, string> {
  const pairs = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean);
  return Object.fromEntries(
    pairs.map((pair) => [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)]),
  );
}

/** Whether `pid` still runs: a zombie (ended, not yet reaped by whoever adopted it) does not. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

test("a build stopped while it records its start leaves neither the recording service nor its scratch directory", async () => {
  const outdir = mkdtempSync(join(tmpdir(), "palisade-build-interrupted-"));
  const executable = join(outdir, "palisade");
  const build = Bun.spawn(["bun", "scripts/build.ts", outdir], {
    cwd: REPO_ROOT,
    stdout: "ignore",
    stderr: "ignore",
  });
  try {
    const recording = await waitFor(() => processRunning(executable), {
      timeoutMs: 30_000,
      intervalMs: 5,
      what: "the recording start",
    });
    const scratch = dirname(environmentOf(recording).DATABASE_PATH!);
    expect(scratch).toStartWith(join(tmpdir(), "palisade-layout-"));
    build.kill("SIGTERM");
    expect(await build.exited).toBe(128 + 15);
    await waitFor(() => !alive(recording), { what: "the recording start to end" });
    expect(existsSync(scratch)).toBe(false);
  } finally {
    build.kill("SIGKILL");
    rmSync(outdir, { recursive: true, force: true });
  }
}, 60_000);
