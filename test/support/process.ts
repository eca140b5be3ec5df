/** Runs the real entry point (`src/index.ts`) as a child process, as `bun run start` would. */
import { join } from "node:path";
import type { Subprocess } from "bun";

export const REPO_ROOT = join(import.meta.dir, "..", "..");

/** A loopback port nothing listens on right now (bound, read, released). */
export function freePort(): number {
  const probe = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const port = probe.port!;
  probe.stop(true);
  return port;
}

export interface ServiceProcess {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  url: URL;
  stdout(): string;
  stderr(): string;
  stop(signal?: NodeJS.Signals): Promise<number>;
}

function collect(stream: ReadableStream<Uint8Array>, into: string[]) {
  const decoder = new TextDecoder();
  (async () => {
    for await (const chunk of stream) into.push(decoder.decode(chunk));
  })();
}

/**
 * Spawns the service on a free port and resolves once it logs "listening": the source entry, or
 * `command` (a bundle) run from `cwd`.
 */
export async function startService(
  env: Record<string, string>,
  timeoutMs = 10_000,
  { command = ["bun", "run", "src/index.ts"], cwd = REPO_ROOT } = {},
): Promise<ServiceProcess> {
  const out: string[] = [];
  const err: string[] = [];
  const proc = Bun.spawn(command, {
    cwd,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", PORT: "0", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  collect(proc.stdout, out);
  collect(proc.stderr, err);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const match = /"url":"([^"]+)","msg":"listening"/.exec(out.join(""));
    if (match) {
      return {
        proc,
        url: new URL(match[1]!),
        stdout: () => out.join(""),
        stderr: () => err.join(""),
        async stop(signal = "SIGTERM") {
          proc.kill(signal);
          return proc.exited;
        },
      };
    }
    if (proc.exitCode !== null) break;
    await Bun.sleep(10);
  }
  proc.kill("SIGKILL");
  throw new Error(`service did not start:\n${out.join("")}\n${err.join("")}`);
}

/** Runs a command to completion and returns its exit code and output. */
export async function runToExit(
  cmd: string[],
  env: Record<string, string>,
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn(cmd, {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    stdin: stdin === undefined ? "ignore" : new Blob([stdin]),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}
