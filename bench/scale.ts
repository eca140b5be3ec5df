/**
 * @module
 * Scale figures, each in child processes so that what is measured is a fresh process:
 * - clients: RSS after `count` distinct clients have each made one request (bench/scale/clients.ts);
 *   the limiter keeps their state on disk, so RSS should not grow with them;
 * - start-up: `bun run src/index.ts` on a free port with a temp database, from spawn to the first
 *   `/health` 200, and its idle RSS a moment (a second) later; the first start (which creates the database)
 *   apart from restarts on an existing one; the same for the bundle production runs (`bun run build`,
 *   built once per run, then `dist/palisade`), on which the targets are judged; and bare
 *   Elysia's start for reference;
 * - exactness: three `src/index.ts` processes on one database file with a limit of N, many
 *   concurrent requests spread over the three: exactly N must be admitted.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { EXECUTABLE } from "../scripts/build";
import { memoryOf, pinned, ROOT } from "./proc";
import { type Summary, summarize } from "./stats";

export interface ClientsResult {
  count: number;
  refused: number;
  seconds: number;
  rssBeforeKb: number;
  /** A second after a full GC (what the target is judged on). */
  rssAfterKb: number;
  /** Right after that GC, before the allocator gave freed pages back. */
  rssRightAfterGcKb: number;
  peakKb: number;
  rows: number;
  dbBytes: number;
  walBytes: number;
}

/**
 * Runs pinned to `core` (when given): the suite runs it on core 1 beside its in-process figures,
 * which then have the other core (bench/index.ts).
 */
export async function measureClients(
  dir: string,
  count: number,
  core?: number,
): Promise<ClientsResult> {
  const command = [
    "bun",
    "bench/scale/clients.ts",
    String(count),
    mkdtempSync(join(dir, "clients-")),
  ];
  const proc = Bun.spawn(core === undefined ? command : pinned(core, command), {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
  ]);
  if ((await proc.exited) !== 0) throw new Error(`bench/scale/clients.ts failed:\n${err}`);
  return JSON.parse(out.trim().split("\n").at(-1)!) as ClientsResult;
}

function freePort(): number {
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const port = server.port!;
  server.stop(true);
  return port;
}

async function untilHealthy(port: number, proc: Bun.Subprocess, timeoutMs = 20_000) {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/health`);
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    await Bun.sleep(2);
  }
  throw new Error(`no /health 200 on port ${port} in ${timeoutMs} ms`);
}

export interface StartResult {
  ms: number;
  /** CPU time (user + system, all threads) the process used up to that answer; 10 ms ticks. */
  cpuMs: number;
  idleRssKb: number;
  /** That RSS's anonymous part (what the process allocated) and file part (mapped pages). */
  idleAnonKb: number;
  idleFileKb: number;
}

/** utime + stime of a process in ms (clock ticks of 10 ms), or NaN once it has gone. */
function cpuTimeOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return Number.NaN;
  }
}

/** Spawns `command`, times it to the first /health 200, reads its RSS a second later, stops it. */
export async function timeStart(
  command: string[],
  env: Record<string, string>,
  settleMs = 1_000,
): Promise<StartResult> {
  const port = freePort();
  const started = performance.now();
  const proc = Bun.spawn([...command.map((part) => part.replace("{port}", String(port)))], {
    cwd: ROOT,
    env: { ...process.env, ...env, PORT: String(port), HOST: "127.0.0.1" },
    stdout: "ignore",
    stderr: "ignore",
  });
  try {
    await untilHealthy(port, proc);
    const ms = performance.now() - started;
    const cpuMs = cpuTimeOf(proc.pid);
    await Bun.sleep(settleMs);
    const memory = memoryOf(proc.pid);
    return {
      ms,
      cpuMs,
      idleRssKb: memory?.rssKb ?? 0,
      idleAnonKb: memory?.anonKb ?? 0,
      idleFileKb: memory?.fileKb ?? 0,
    };
  } finally {
    proc.kill("SIGKILL");
    await proc.exited;
  }
}

interface Starts {
  ms: Summary;
  cpuMs: Summary;
  idleRssKb: Summary;
  idleAnonKb: Summary;
  idleFileKb: Summary;
}

export interface StartupResults {
  first: StartResult;
  /** `bun run src/index.ts` (`bun run start`). */
  restart: Starts;
  /** The executable (`bun run start:dist`, the Docker image): what the targets judge. */
  bundled: Starts;
  /**
   * The executable again, each start with its file's pages first dropped from the page cache (as
   * after a reboot). A page fault maps the neighbours of the page it reads that are already cached
   * (the kernel's fault-around), so a cached executable shows more resident pages than a cold one
   * for the same code run.
   */
  bundledCold: Starts;
  bare: Starts;
}

/** Drops a file's pages from the page cache (GNU dd's documented `iflag=nocache count=0`). */
function dropFromPageCache(file: string): void {
  Bun.spawnSync(["dd", `if=${file}`, "iflag=nocache", "count=0", "status=none"]);
}

/**
 * Builds the executable (`bun run build`) into a new folder of `dir` in a child process, on `core`
 * when given, and returns its path. The build compiles twice around a recorded start (7–8 s of
 * both cores' worth here): run beside the in-process figures, it is off the run's critical path.
 */
export async function buildExecutable(dir: string, core?: number): Promise<string> {
  const distDir = mkdtempSync(join(dir, "dist-"));
  const command = ["bun", "scripts/build.ts", distDir];
  const proc = Bun.spawn(core === undefined ? command : pinned(core, command), {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [, err] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
  ]);
  if ((await proc.exited) !== 0) throw new Error(`scripts/build.ts failed:\n${err}`);
  return join(distDir, EXECUTABLE);
}

/** Start-up and idle RSS of the source run, the executable at `executable`, and bare Elysia. */
export async function measureStartup(
  dir: string,
  executable: string,
  starts: number,
  coldStarts = starts,
): Promise<StartupResults> {
  const dbDir = mkdtempSync(join(dir, "startup-"));
  const env = {
    APP_ENV: "development",
    LOG_LEVEL: "warn",
    DATABASE_PATH: join(dbDir, "palisade.db"),
  };
  const palisade = ["bun", "run", "src/index.ts"];
  const bundle = [executable];
  const bare = ["bun", "bench/servers/bare.ts", "{port}"];
  // Palisade's idle RSS is read a second after its first answer: the unknown-email login's dummy
  // argon2id hash, started with the service, holds 64 MB until it is done.
  const first = await timeStart(palisade, env, 1_000);
  const restarts: StartResult[] = [];
  const bundled: StartResult[] = [];
  const bundledCold: StartResult[] = [];
  const bares: StartResult[] = [];
  for (let i = 0; i < starts; i++) {
    restarts.push(await timeStart(palisade, env, 1_000));
    bundled.push(await timeStart(bundle, env, 1_000));
    bares.push(await timeStart(bare, {}, 500));
  }
  // After every warm start, never between them: how the file came into the page cache changes
  // what a start maps (written by the build, then read back after a cold start: 63 and 59 MB
  // here for the same code), so the warm figure is always taken as the build left it.
  for (let i = 0; i < coldStarts; i++) {
    dropFromPageCache(bundle[0]!);
    bundledCold.push(await timeStart(bundle, env, 1_000));
  }
  const pair = (list: StartResult[]): Starts => ({
    ms: summarize(list.map((r) => r.ms)),
    cpuMs: summarize(list.map((r) => r.cpuMs)),
    idleRssKb: summarize(list.map((r) => r.idleRssKb)),
    idleAnonKb: summarize(list.map((r) => r.idleAnonKb)),
    idleFileKb: summarize(list.map((r) => r.idleFileKb)),
  });
  return {
    first,
    restart: pair(restarts),
    bundled: pair(bundled),
    bundledCold: pair(bundledCold),
    bare: pair(bares),
  };
}

export interface ExactnessResult {
  limit: number;
  sent: number;
  admitted: number;
  refused: number;
  other: number;
}

/** Three processes on one file, a limit of `limit`, `sent` concurrent requests over the three. */
export async function measureExactness(
  dir: string,
  limit: number,
  sent: number,
): Promise<ExactnessResult> {
  const dbDir = mkdtempSync(join(dir, "exact-"));
  const env = {
    ...process.env,
    APP_ENV: "development",
    LOG_LEVEL: "warn",
    DATABASE_PATH: join(dbDir, "palisade.db"),
    RATE_LIMIT_PER_MINUTE: String(limit),
    RATE_LIMIT_BURST: String(limit),
    // Refusals do not turn into address blocks here: only the limiter's count is under test.
    IP_BLOCK_RATE_LIMIT_REFUSALS: "0",
  };
  // The first process creates the database and applies the migrations; the others open it.
  const ports = [freePort(), freePort(), freePort()];
  const procs: Bun.Subprocess[] = [];
  try {
    for (const port of ports) {
      const proc = Bun.spawn(["bun", "run", "src/index.ts"], {
        cwd: ROOT,
        env: { ...env, PORT: String(port), HOST: "127.0.0.1" },
        stdout: "ignore",
        stderr: "ignore",
      });
      procs.push(proc);
      await untilHealthy(port, proc);
    }
    const statuses = await Promise.all(
      Array.from({ length: sent }, (_, i) =>
        fetch(`http://127.0.0.1:${ports[i % 3]}/api/auth/csrf`).then(async (response) => {
          await response.arrayBuffer();
          return response.status;
        }),
      ),
    );
    const admitted = statuses.filter((s) => s === 200).length;
    const refused = statuses.filter((s) => s === 429).length;
    return { limit, sent, admitted, refused, other: sent - admitted - refused };
  } finally {
    for (const proc of procs) proc.kill("SIGKILL");
    await Promise.all(procs.map((proc) => proc.exited));
  }
}
