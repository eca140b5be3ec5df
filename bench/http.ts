/**
 * Requests per second over HTTP with wrk, the server pinned to one core and wrk to the other, bare
 * Elysia and the full Palisade chain measured alternately in the same run.
 */
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");

type Mode = "bare" | "full" | "full-nocache";

async function startServer(mode: Mode) {
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
  return {
    proc,
    port: Number(/ready (\d+)/.exec(text)![1]),
    token: /token (\S+)/.exec(text)?.[1] ?? null,
  };
}

async function wrk(port: number, seconds: number, path = "/bench", token: string | null = null) {
  const auth = token ? ["-H", `Authorization: Bearer ${token}`] : [];
  const proc = Bun.spawn(
    [
      "taskset",
      "-c",
      "1",
      "wrk",
      "-t1",
      "-c64",
      `-d${seconds}s`,
      ...auth,
      `http://127.0.0.1:${port}${path}`,
    ],
    { stdout: "pipe", stderr: "pipe" },
  );
  const out = await new Response(proc.stdout).text();
  await proc.exited;
  const match = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!match) throw new Error(`wrk printed no rate:\n${out}`);
  if (/Non-2xx/.test(out)) throw new Error(`wrk saw errors:\n${out}`);
  return Number(match[1]);
}

export interface HttpResults {
  bare: number;
  full: number;
  authCached: number;
  authUncached: number;
}

export async function measureHttp(seconds: number, rounds: number): Promise<HttpResults> {
  const best: HttpResults = { bare: 0, full: 0, authCached: 0, authUncached: 0 };
  const keep = (name: keyof HttpResults, value: number) => {
    best[name] = Math.max(best[name], value);
  };
  for (let round = 0; round < rounds; round++) {
    for (const mode of ["bare", "full", "full-nocache"] as const) {
      const server = await startServer(mode);
      await wrk(server.port, 1); // warm-up
      if (mode === "bare") keep("bare", await wrk(server.port, seconds));
      if (mode === "full") {
        keep("full", await wrk(server.port, seconds));
        keep("authCached", await wrk(server.port, seconds, "/bench-auth", server.token));
      }
      if (mode === "full-nocache") {
        keep("authUncached", await wrk(server.port, seconds, "/bench-auth", server.token));
      }
      server.proc.kill("SIGKILL");
      await server.proc.exited;
    }
  }
  return best;
}

export function wrkAvailable(): boolean {
  return Bun.which("wrk") !== null && Bun.which("taskset") !== null;
}
