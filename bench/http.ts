/**
 * Requests per second over HTTP with wrk, the server pinned to one core and wrk to the other, bare
 * Elysia and the full Palisade chain measured alternately in the same run.
 */
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");

async function startServer(mode: "bare" | "full") {
  const proc = Bun.spawn(["taskset", "-c", "0", "bun", "run", "bench/server.ts", mode, "0"], {
    cwd: ROOT,
    env: { ...process.env, APP_ENV: "development", LOG_LEVEL: "info" },
    // Logs go to /dev/null, as to a fast log sink; reading them here would cost the measured core.
    stdout: "ignore",
    stderr: "pipe",
  });
  const reader = proc.stderr.getReader();
  let text = "";
  while (!/ready (\d+)/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`bench server (${mode}) exited`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return { proc, port: Number(/ready (\d+)/.exec(text)![1]) };
}

async function wrk(port: number, seconds: number): Promise<number> {
  const proc = Bun.spawn(
    ["taskset", "-c", "1", "wrk", "-t1", "-c64", `-d${seconds}s`, `http://127.0.0.1:${port}/bench`],
    { stdout: "pipe", stderr: "pipe" },
  );
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  const match = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!match) throw new Error(`wrk printed no rate:\n${out}`);
  if (/Non-2xx/.test(out)) throw new Error(`wrk saw errors:\n${out}`);
  return Number(match[1]);
}

export async function measureHttp(seconds: number, rounds: number) {
  const best = { bare: 0, full: 0 };
  for (let round = 0; round < rounds; round++) {
    for (const mode of ["bare", "full"] as const) {
      const server = await startServer(mode);
      await wrk(server.port, 1); // warm-up
      best[mode] = Math.max(best[mode], await wrk(server.port, seconds));
      server.proc.kill("SIGKILL");
      await server.proc.exited;
    }
  }
  return best;
}

export function wrkAvailable(): boolean {
  return Bun.which("wrk") !== null && Bun.which("taskset") !== null;
}
