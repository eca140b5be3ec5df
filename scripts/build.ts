/**
 * @module
 * `bun run build [outdir]`: the service compiled ahead of time into one executable,
 * `dist/palisade` (or `outdir/palisade`), for production (`bun run start:dist`, the Dockerfile).
 * It holds the Bun runtime, the bundled code as bytecode (a start neither transpiles ~1,700 modules
 * nor parses them), its source map (stack traces in logs and Sentry name the source lines), the
 * migrations and the default FAQ: it reads no file of the source tree and needs no `node_modules`.
 * What the source loads on first use (zxcvbn, openai, stripe, @sentry, jose, the OpenAPI
 * generator) stays in chunks of its own inside it, loaded then. It takes its settings from the
 * environment only (no `.env`, no `bunfig.toml`), and a start naming no `APP_ENV` is a production
 * start (src/index.ts). Nothing in `outdir` is deleted: what the build writes is overwritten.
 *
 * Two things keep what a start leaves resident small (README, Performance: idle RSS):
 * - the bytecode a start uses is laid out together at the front of the executable. The build
 *   compiles it once (into a scratch directory in `outdir`), starts that executable on a scratch
 *   database in development until its first `/health` answer with Bun recording the functions it
 *   runs (`BUN_BYTECODE_ORDER_OUT`), stops it, and compiles again in that order (`bytecodeOrder`):
 *   a start then faults in fewer pages of the file, and the kernel maps fewer cached neighbours of
 *   each (fault-around);
 * - it starts with JavaScriptCore's tier-up thresholds raised (`jitPolicy`), so the start's
 *   run-once loops over table definitions, schemas and routes stay in the interpreter instead of
 *   being compiled by the optimising JIT; src/index.ts sets the normal policy once it listens.
 *
 * `{ compile: false }` writes the same bundle as plain files (`index.js` and its chunks) instead:
 * what the executable holds, for reading (test/startup/bundle.test.ts checks the chunks).
 */
import {
  closeSync,
  existsSync,
  constants as fsConstants,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { constants } from "node:os";
import { join, resolve } from "node:path";

const ROOT = join(import.meta.dir, "..");
export const EXECUTABLE = "palisade";
/**
 * The tier-up thresholds' multiplier the executable starts with (Bun's `jitPolicy`). Measured on
 * the executable's start (idle RSS a second after the first /health, 7 interleaved starts): 63.7 MB
 * with the layout alone, 60.5 MB at 10, 56.7 MB at 100.
 */
export const START_JIT_POLICY = 100;
/** How long the recording start may take to answer /health before the build gives up. */
const RECORDING_TIMEOUT_MS = 30_000;

export interface BuildResult {
  /** What the build wrote. */
  outputs: string[];
  /**
   * Entries of the recording start's record (the functions and modules it ran, which the
   * executable lays out first); null for the plain files, which have no layout.
   */
  recordedEntries: number | null;
}

export async function buildBundle(
  outdir: string,
  { compile = true }: { compile?: boolean } = {},
): Promise<BuildResult> {
  const common = {
    // The background checkpointer's thread (db/background-checkpoint) is an entry point of its own:
    // a Worker's script must be one for the executable to hold it.
    entrypoints: [join(ROOT, "src/index.ts"), join(ROOT, "src/db/checkpoint-worker.ts")],
    target: "bun" as const,
    format: "esm" as const,
    // Not minified: Elysia decides what each handler and hook needs parsed by reading its source
    // text (Sucrose), and fails on minified text (it then prints a non-JSON line to stdout and
    // parses everything for that route). Minifying measured no faster start here.
    minify: false,
    splitting: true,
    sourcemap: "linked" as const,
  };
  if (!compile) {
    const result = await Bun.build({ ...common, outdir });
    if (!result.success) throw new AggregateError(result.logs, "bun build failed");
    return { outputs: result.outputs.map((output) => output.path), recordedEntries: null };
  }
  const outfile = join(outdir, EXECUTABLE);
  const compileTo = async (outfile: string, bytecodeOrder: string | null) => {
    const result = await Bun.build({
      ...common,
      // Nothing from the working directory: a `.env` there (Bun would read one from wherever the
      // executable is started, where `bun run start` reads the project's) could hand anyone who
      // can write a file there an admin API key or an upstream's secret, and a `bunfig.toml`'s
      // `preload` would run code the build never saw. Settings come from the environment.
      compile: {
        outfile,
        autoloadDotenv: false,
        autoloadBunfig: false,
        jitPolicy: START_JIT_POLICY,
        bytecodeOrder,
      },
      define: { PALISADE_EXECUTABLE: "true" },
      bytecode: true,
    });
    if (!result.success) throw new AggregateError(result.logs, "bun build failed");
    return result.outputs.map((output) => output.path);
  };
  // The first executable, the recording start's database and the record live in a scratch
  // directory inside `outdir`, so `outfile` is only ever the laid-out executable (an interrupted
  // build leaves none there rather than one without the layout), and what a build killed outright
  // (SIGKILL, out of memory) leaves is in `outdir`, where the next build removes it.
  mkdirSync(outdir, { recursive: true });
  // One spelling of the folder (not a link to it) in every path the sweep compares.
  const folder = realpathSync(outdir);
  for (const entry of readdirSync(folder)) {
    if (entry.startsWith(SCRATCH_PREFIX)) removeLeftover(join(folder, entry));
  }
  // An interrupted build (Ctrl-C, a CI job cancelled, `timeout`) takes the recording start and
  // its scratch directory with it: a development-mode service must not outlive the build. The
  // handlers are in place before either exists, so no signal can come between.
  const recording: Recording = { scratch: null, start: null };
  const interrupted = async (signal: NodeJS.Signals) => {
    recording.start?.kill("SIGKILL");
    // Reaped here, not left to whatever adopts it: some containers' init never reaps.
    await recording.start?.exited;
    if (recording.scratch) rmSync(recording.scratch, { recursive: true, force: true });
    process.exit(128 + (constants.signals[signal] ?? 1));
  };
  const exiting = () => recording.start?.kill("SIGKILL");
  for (const signal of INTERRUPTIONS) process.once(signal, interrupted);
  process.once("exit", exiting);
  try {
    recording.scratch = mkdtempSync(join(folder, SCRATCH_PREFIX));
    writeFileSync(join(recording.scratch, BUILD_PID), processMark(process.pid) ?? "");
    const first = join(recording.scratch, EXECUTABLE);
    await compileTo(first, null);
    const order = await recordStart(first, recording);
    const outputs = await compileTo(outfile, order.file);
    return { outputs, recordedEntries: order.entries };
  } finally {
    for (const signal of INTERRUPTIONS) process.off(signal, interrupted);
    process.off("exit", exiting);
    if (recording.scratch) rmSync(recording.scratch, { recursive: true, force: true });
  }
}

const INTERRUPTIONS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
/** The scratch directory's name in `outdir`, and of what a killed build left there. */
const SCRATCH_PREFIX = ".layout-";
/** In a scratch directory: the pid of the build that made it, and of its recording start. */
const BUILD_PID = "build.pid";
const START_PID = "start.pid";

/**
 * A process as a pid file names it: its pid and when it started (`/proc/<pid>/stat`'s start time),
 * so a pid the system has given to another process since is not taken for it.
 */
function processMark(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const startTime = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
    return startTime === undefined ? null : `${pid} ${startTime}`;
  } catch {
    return null;
  }
}

/**
 * The pid a pid file in a leftover scratch folder names, when that very process still runs (same
 * start time) and runs `expected` (its first argument), else null. Only a small regular file is
 * read: anyone able to write into `outdir` could plant a FIFO or a link to /dev/zero there.
 */
function runningPid(file: string, expected: (argv0: string) => boolean): number | null {
  let fd: number | null = null;
  try {
    // Opened once, never following a link nor waiting on a FIFO, and checked as opened: a file
    // swapped between a check and an open would otherwise still be read (re-probe 15g F4).
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW);
    const stat = fstatSync(fd);
    if (!stat.isFile() || stat.size > 64) return null;
    const bytes = Buffer.alloc(64);
    const mark = bytes
      .subarray(0, readSync(fd, bytes, 0, 64, 0))
      .toString("utf8")
      .trim();
    const pid = Number(mark.split(" ")[0]);
    if (!Number.isInteger(pid) || pid <= 0 || processMark(pid) !== mark) return null;
    const argv0 = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "";
    return expected(argv0) ? pid : null;
  } catch {
    return null;
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/**
 * A scratch directory another build left in `outdir`: kept while that build still runs (two
 * builds into one folder at once); otherwise its recording start, if it outlived a build killed
 * outright, is stopped, and the directory removed.
 */
function removeLeftover(scratch: string): void {
  const builder = runningPid(join(scratch, BUILD_PID), (argv0) => argv0.endsWith("bun"));
  if (builder !== null && builder !== process.pid) return;
  const start = runningPid(join(scratch, START_PID), (argv0) => argv0.startsWith(`${scratch}/`));
  try {
    if (start !== null) process.kill(start, "SIGKILL");
  } catch {
    // It ended between the check and the kill: nothing left to stop.
  }
  rmSync(scratch, { recursive: true, force: true });
}

/** What an interrupted build must not leave behind: the recording start and its directory. */
interface Recording {
  scratch: string | null;
  start: Bun.Subprocess<"ignore", "ignore", "pipe"> | null;
}

/**
 * Starts `executable` on a scratch database in the recording's directory (development: its
 * generated secrets stay there) until its first `/health` 200, with Bun recording the functions it
 * runs, then stops it the way a supervisor does (SIGTERM), which is when Bun writes the record.
 */
async function recordStart(
  executable: string,
  recording: Recording,
): Promise<{ file: string; entries: number }> {
  const dir = recording.scratch!;
  const file = join(dir, "bytecode-order");
  const port = freePort();
  recording.start = Bun.spawn([executable], {
    cwd: dir,
    // Only what the start needs: nothing of the builder's own settings (an API_KEYS, a
    // DATABASE_PATH) reaches it.
    env: {
      PATH: process.env.PATH ?? "",
      APP_ENV: "development",
      LOG_LEVEL: "warn",
      HOST: "127.0.0.1",
      PORT: String(port),
      DATABASE_PATH: join(dir, "layout.db"),
      BUN_BYTECODE_ORDER_OUT: file,
    },
    stdout: "ignore",
    stderr: "pipe",
  });
  // For the next build, should this one be killed outright before it can stop the start.
  writeFileSync(join(dir, START_PID), processMark(recording.start.pid) ?? "");
  return recordUntilHealthy(recording.start, port, file);
}

/** Waits for the recording start's first `/health` 200, stops it, and reads its record. */
async function recordUntilHealthy(
  proc: Bun.Subprocess<"ignore", "ignore", "pipe">,
  port: number,
  file: string,
): Promise<{ file: string; entries: number }> {
  const stderr = new Response(proc.stderr).text();
  const failed = async (why: string) =>
    new Error(`the build's recording start ${why}:\n${(await stderr).trim()}`);
  const deadline = performance.now() + RECORDING_TIMEOUT_MS;
  for (;;) {
    if (proc.exitCode !== null) throw await failed(`exited with ${proc.exitCode}`);
    if (performance.now() > deadline) {
      proc.kill("SIGKILL");
      throw await failed(`did not answer /health within ${RECORDING_TIMEOUT_MS / 1000} s`);
    }
    const healthy = await fetch(`http://127.0.0.1:${port}/health`)
      .then((response) => response.status === 200)
      .catch(() => false);
    if (healthy) break;
    await Bun.sleep(20);
  }
  proc.kill("SIGTERM");
  const code = await proc.exited;
  if (code !== 0) throw await failed(`stopped with ${code}`);
  if (!existsSync(file) || statSync(file).size === 0) {
    throw await failed("wrote no record of the functions it ran");
  }
  // Its first line names the record's format; every other one is an entry.
  const entries =
    (await Bun.file(file).text()).split("\n").filter((line) => line !== "").length - 1;
  return { file, entries };
}

function freePort(): number {
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const port = server.port!;
  server.stop(true);
  return port;
}

if (import.meta.main) {
  const outdir = resolve(process.argv[2] ?? join(ROOT, "dist"));
  const { recordedEntries } = await buildBundle(outdir);
  process.stdout.write(
    `built ${join(outdir, EXECUTABLE)} (bytecode laid out by a recorded start of ${recordedEntries} entries)\n`,
  );
}
