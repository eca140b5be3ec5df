/**
 * @module
 * Bench processes: a server started pinned to core 0 (`taskset -c 0`) that announces itself on
 * stderr with `ready <port>` (and any other `name value` lines before it), its peak and current
 * RSS read from /proc/<pid>/status, and wrk pinned to core 1 with bench/lua/request.lua.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "..");
const LUA = join(import.meta.dir, "lua", "request.lua");

export interface BenchServer {
  proc: Bun.Subprocess<"ignore", "ignore", "pipe">;
  port: number;
  /** The `name value` lines the server printed before `ready`. */
  info: Record<string, string>;
  /** Reads more of stderr until a line equal to `line` arrives. */
  waitFor(line: string, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export function pinned(core: number, command: string[]): string[] {
  return Bun.which("taskset") ? ["taskset", "-c", String(core), ...command] : command;
}

export async function startServer(
  command: string[],
  env: Record<string, string> = {},
  timeoutMs = 20_000,
): Promise<BenchServer> {
  const proc = Bun.spawn(pinned(0, command), {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    // Logs (the access log) go to /dev/null, as to a fast log sink; reading them here would cost
    // the measured core.
    stdout: "ignore",
    stderr: "pipe",
  });
  const reader = proc.stderr.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const readUntil = async (done: () => boolean, what: string, ms: number) => {
    const deadline = Date.now() + ms;
    while (!done()) {
      const timer = Bun.sleep(Math.max(0, deadline - Date.now())).then(() => "timeout" as const);
      const chunk = await Promise.race([reader.read(), timer]);
      if (chunk === "timeout") throw new Error(`${command.join(" ")}: no ${what} in ${ms} ms`);
      if (chunk.done) throw new Error(`${command.join(" ")} exited:\n${text}`);
      text += decoder.decode(chunk.value);
    }
  };
  await readUntil(() => /^ready \d+$/m.test(text), "ready line", timeoutMs);
  const info: Record<string, string> = {};
  for (const [, name, value] of text.matchAll(/^(\w+) (.*)$/gm)) info[name!] = value!;
  let seen = text.length;
  return {
    proc,
    port: Number(info.ready),
    info,
    async waitFor(line, ms = 30_000) {
      const from = seen;
      await readUntil(() => text.slice(from).split("\n").includes(line), line, ms);
      seen = text.length;
    },
    async stop() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}

/** VmHWM (peak) and VmRSS (now) of a process, in kB; null once it has gone. */
/**
 * A process's memory from /proc: peak and current RSS, and the current RSS split into what it
 * allocated (RssAnon) and the pages of files it maps that are resident (RssFile: its executable's
 * code and embedded bundle, shared libraries).
 */
export function memoryOf(
  pid: number,
): { peakKb: number; rssKb: number; anonKb: number; fileKb: number } | null {
  const file = `/proc/${pid}/status`;
  if (!existsSync(file)) return null;
  try {
    const status = readFileSync(file, "utf8");
    const field = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? 0);
    return {
      peakKb: field("VmHWM"),
      rssKb: field("VmRSS"),
      anonKb: field("RssAnon"),
      fileKb: field("RssFile"),
    };
  } catch {
    return null;
  }
}

/** A process's CPU time so far (user + system, every thread), in µs; null once it has gone. */
export function cpuTimeUs(pid: number): number | null {
  try {
    // Fields after the command's closing parenthesis (which may itself hold spaces): utime is the
    // 12th of them and stime the 13th, in clock ticks.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS) * 1e6;
  } catch {
    return null;
  }
}

/** Linux's USER_HZ: what /proc/<pid>/stat counts CPU time in (100 on every Linux port but Alpha). */
const CLOCK_TICKS = 100;

/** The cores the bench runs on: the server pinned to 0, wrk to 1 (null: not pinned, every core). */
export const MEASURED_CORES = [0, 1] as const;

export interface CoreTimes {
  /**
   * Time the cores ran processes (user, nice, system), µs. Interrupt time is left out: the kernel
   * may count the loopback traffic's own softirq work there rather than in the server's or wrk's
   * time, and it is the bench's own traffic.
   */
  busyUs: number;
  /** Time the hypervisor gave the cores' turn to another machine (steal), µs. */
  stealUs: number;
}

/**
 * Busy and stolen time of `cores` so far (every core when null), from the text of /proc/stat: each
 * `cpuN` line holds user, nice, system, idle, iowait, irq, softirq and steal, in clock ticks (user
 * already holds the time a guest ran).
 */
export function parseCoreTimes(stat: string, cores: readonly number[] | null): CoreTimes {
  let busy = 0;
  let steal = 0;
  for (const line of stat.split("\n")) {
    const match = /^cpu(\d*)\s+(.*)$/.exec(line);
    if (!match) continue;
    // The first line (`cpu`, no number) is every core's sum: read it only when no core is named.
    const core = match[1] === "" ? null : Number(match[1]);
    if (cores === null ? core !== null : core === null || !cores.includes(core)) continue;
    const [user, nice, system, , , , , stolen] = match[2]!.trim().split(/\s+/).map(Number);
    busy += user! + nice! + system!;
    steal += stolen ?? 0;
  }
  const usPerTick = 1e6 / CLOCK_TICKS;
  return { busyUs: busy * usPerTick, stealUs: steal * usPerTick };
}

/** parseCoreTimes of this machine's /proc/stat; null where there is none (not Linux). */
export function coreTimesUs(cores: readonly number[] | null): CoreTimes | null {
  try {
    return parseCoreTimes(readFileSync("/proc/stat", "utf8"), cores);
  } catch {
    return null;
  }
}

/**
 * What else ran on the measured cores during a run, as a share of one core's time: their busy time
 * less the server's and wrk's own CPU time (this process's reading of wrk's output is in it, a few
 * ms in seconds), and the time the hypervisor stole from them. A figure measured while either was
 * large was measured on a busy machine, whatever its rounds say.
 */
export function interference(
  before: CoreTimes,
  after: CoreTimes,
  ownUs: number,
  wallUs: number,
): { otherShare: number; stealShare: number } {
  return {
    otherShare: Math.max(0, after.busyUs - before.busyUs - ownUs) / wallUs,
    stealShare: Math.max(0, after.stealUs - before.stealUs) / wallUs,
  };
}

export interface WrkRequest {
  port: number;
  /** The server's pid: its CPU time over the run is read from /proc (cpuUsPerRequest). */
  serverPid?: number;
  path: string;
  seconds: number;
  method?: "GET" | "POST";
  body?: string;
  token?: string | null;
  manyClients?: boolean;
  connections?: number;
}

export interface WrkResult {
  rps: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  /** Socket errors and non-2xx answers; a figure with any is reported as failed. */
  errors: number;
  /** The server's CPU time (every thread, user + system) per request answered; null if unread. */
  cpuUsPerRequest: number | null;
  /**
   * How often wrk had to be woken per request answered (its voluntary context switches): each time
   * it waits with nothing to read, the server's next send to it pays the cross-core wake-up.
   */
  wakeupsPerRequest: number | null;
  /**
   * Other work on the measured cores during the run and the time stolen from them, each as a share
   * of one core's time (interference); null where /proc/stat or the server's CPU time is unread.
   */
  otherCpuShare: number | null;
  stealShare: number | null;
}

export async function runWrk(request: WrkRequest): Promise<WrkResult> {
  const cores = Bun.which("taskset") ? MEASURED_CORES : null;
  const cpuBefore = request.serverPid ? cpuTimeUs(request.serverPid) : null;
  const coresBefore = coreTimesUs(cores);
  const startedAt = performance.now();
  const proc = Bun.spawn(
    pinned(1, [
      "wrk",
      "-t1",
      `-c${request.connections ?? 32}`,
      `-d${request.seconds}s`,
      "--timeout",
      "5s",
      "-s",
      LUA,
      `http://127.0.0.1:${request.port}${request.path}`,
    ]),
    {
      stdout: "pipe",
      stderr: "pipe",
      env: {
        ...process.env,
        BENCH_METHOD: request.method ?? "GET",
        BENCH_BODY: request.body ?? "",
        BENCH_TOKEN: request.token ?? "",
        BENCH_MANY_CLIENTS: request.manyClients ? "1" : "0",
      },
    },
  );
  const [out, err] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
  ]);
  await proc.exited;
  const cpuAfter = request.serverPid ? cpuTimeUs(request.serverPid) : null;
  const coresAfter = coreTimesUs(cores);
  const wallUs = (performance.now() - startedAt) * 1000;
  // taskset execs wrk, so the child's own usage is wrk's.
  const usage = proc.resourceUsage();
  const voluntary = usage?.contextSwitches.voluntary;
  const shares =
    coresBefore && coresAfter && cpuBefore !== null && cpuAfter !== null && usage
      ? interference(
          coresBefore,
          coresAfter,
          cpuAfter - cpuBefore + Number(usage.cpuTime.total),
          wallUs,
        )
      : null;
  const line = /^BENCH (\{.*\})$/m.exec(out)?.[1];
  if (!line) throw new Error(`wrk printed no result:\n${out}${err}`);
  const r = JSON.parse(line) as Record<string, number>;
  const errors = r.connectErrors! + r.readErrors! + r.writeErrors! + r.timeouts! + r.non2xx!;
  return {
    rps: r.requests! / (r.durationUs! / 1e6),
    requests: r.requests!,
    p50Ms: r.p50Us! / 1000,
    p99Ms: r.p99Us! / 1000,
    errors,
    // The server works only for wrk during the run; its warm-up and any idle moment before or
    // after are a few ticks in thousands.
    cpuUsPerRequest:
      cpuBefore !== null && cpuAfter !== null && r.requests! > 0
        ? (cpuAfter - cpuBefore) / r.requests!
        : null,
    wakeupsPerRequest: voluntary !== undefined && r.requests! > 0 ? voluntary / r.requests! : null,
    otherCpuShare: shares?.otherShare ?? null,
    stealShare: shares?.stealShare ?? null,
  };
}

export function wrkAvailable(): boolean {
  return Bun.which("wrk") !== null;
}

export const WRK_MISSING =
  "wrk is not installed: the HTTP figures need it (Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk)";
