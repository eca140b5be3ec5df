/**
 * `bun run build` starts the executable it compiled once, to record the order its start runs the
 * bytecode in (scripts/build.ts). A build interrupted then (Ctrl-C, a cancelled CI job, `timeout`)
 * must take that development-mode service and its scratch directory with it (re-probe 15c F3), and
 * leave no executable without the layout; what a build killed outright left, the next one removes.
 */
import { expect, test } from "bun:test";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { buildBundle } from "../../scripts/build";
import { REPO_ROOT } from "../support/process";
import { waitFor } from "../support/wait";

/** The pid of the process whose executable's path starts with `prefix`, or null. */
function processRunning(prefix: string): number | null {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (argv[0]!.startsWith(prefix)) return Number(entry);
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

/** A process as the build's pid files name it: its pid and its start time. */
function markOf(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return `${pid} ${stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]}`;
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
  // The recording start runs the first executable, in the build's scratch directory in `outdir`.
  const scratchPrefix = join(outdir, ".layout-");
  const build = Bun.spawn(["bun", "scripts/build.ts", outdir], {
    cwd: REPO_ROOT,
    stdout: "ignore",
    stderr: "ignore",
  });
  try {
    const recording = await waitFor(() => processRunning(scratchPrefix), {
      timeoutMs: 30_000,
      intervalMs: 5,
      what: "the recording start",
    });
    const scratch = dirname(environmentOf(recording).DATABASE_PATH!);
    expect(scratch).toStartWith(scratchPrefix);
    build.kill("SIGTERM");
    expect(await build.exited).toBe(128 + 15);
    await waitFor(() => !alive(recording), { what: "the recording start to end" });
    expect(existsSync(scratch)).toBe(false);
    // Nor an executable without the layout where the build's output goes.
    expect(readdirSync(outdir)).toEqual([]);
  } finally {
    build.kill("SIGKILL");
    rmSync(outdir, { recursive: true, force: true });
  }
}, 60_000);

test("what a build killed outright left in its output folder, the next build removes, its recording start included; a build still running keeps its own (re-probe 15e F4)", async () => {
  const outdir = mkdtempSync(join(tmpdir(), "palisade-build-leftover-"));
  let orphan: Bun.Subprocess | null = null;
  let other: Bun.Subprocess | null = null;
  try {
    // A build killed with SIGKILL while recording: its folder, and its start still running (a
    // stand-in that runs from inside the folder, as the start does).
    const killed = join(outdir, ".layout-killed");
    mkdirSync(killed);
    writeFileSync(join(killed, "layout.db.audit-key"), "a key a killed build left");
    writeFileSync(join(killed, "build.pid"), "999999999 1");
    symlinkSync(Bun.which("sleep")!, join(killed, "palisade"));
    orphan = Bun.spawn([join(killed, "palisade"), "600"]);
    await waitFor(() => readFileSync(`/proc/${orphan!.pid}/cmdline`, "utf8").startsWith(killed));
    writeFileSync(join(killed, "start.pid"), markOf(orphan.pid));
    // What someone able to write into the folder could plant: a FIFO that would hold a reader
    // for ever, a link to an endless file, a start.pid naming a process that does not run from
    // that folder (this test's own).
    const planted = join(outdir, ".layout-planted");
    mkdirSync(planted);
    Bun.spawnSync(["mkfifo", join(planted, "build.pid")]);
    symlinkSync("/dev/zero", join(planted, "start.pid"));
    const foreign = join(outdir, ".layout-foreign");
    mkdirSync(foreign);
    writeFileSync(join(foreign, "start.pid"), markOf(process.pid));
    // Another build into the same folder, still running (a bun process stands in).
    other = Bun.spawn(["bun", "-e", "setTimeout(() => {}, 600_000)"]);
    const running = join(outdir, ".layout-running");
    mkdirSync(running);
    await waitFor(() => existsSync(`/proc/${other!.pid}/stat`));
    writeFileSync(join(running, "build.pid"), markOf(other.pid));

    // In this process, so that the sweep is measured as the rest of the build is.
    await buildBundle(outdir);
    expect(readdirSync(outdir).filter((name) => name.startsWith(".layout-"))).toEqual([
      ".layout-running",
    ]);
    expect(await orphan.exited).not.toBe(0);
    expect(existsSync(join(outdir, "palisade"))).toBe(true);
  } finally {
    orphan?.kill("SIGKILL");
    other?.kill("SIGKILL");
    rmSync(outdir, { recursive: true, force: true });
  }
}, 60_000);
