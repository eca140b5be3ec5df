/**
 * @module
 * The HTTP suite: four stacks serving the same routes, measured interleaved (A B C D, A B C D, …)
 * so each round sees the same machine, each server pinned to core 0 and wrk (`-t1 -c32`) to core 1.
 *
 *   A  bare Elysia on Bun, no defences (the floor)            bench/servers/bare.ts
 *   A′ A with Palisade's response headers and peer lookup     bench/servers/shape.ts
 *      (no defence: the ceiling of B's ratios, see shape.ts)
 *   B  Palisade: createApp, every defence, limits raised     bench/servers/palisade.ts
 *   C  Express 5 + helmet + cors + express-rate-limit + jsonwebtoken + express.json on Node,
 *      verifying with a string secret (C-string) and with a KeyObject (C-key)   bench/servers/express.mjs
 *   D  Elysia + elysia-helmet + @elysiajs/cors + elysia-rate-limit + @elysiajs/jwt   bench/servers/plugins.ts
 *
 * Each server is started fresh in every round, warmed up (discarded), then each route is measured
 * for a fixed duration; its peak RSS (VmHWM) is read before it is stopped. A figure's ratio to A is
 * taken within its round, then the median of the rounds' ratios is reported.
 */
import { join } from "node:path";
import { SignJWT } from "jose";
import { createApp } from "../src/app";
import { memoryOf, runWrk, startServer } from "./proc";
import { BENCH_JWT_SECRET, BENCH_POST_BODY } from "./servers/payload";
import { benchServices } from "./services";
import { type Summary, summarize } from "./stats";

export type ServerId = "A" | "A′" | "B" | "C-string" | "C-key" | "D";
export type RouteId = "health" | "public" | "protected" | "chat";

export const SERVERS: Record<ServerId, { label: string; command: string[] }> = {
  A: { label: "A bare Elysia (Bun)", command: ["bun", "bench/servers/bare.ts"] },
  "A′": {
    label: "A′ bare Elysia + Palisade's response headers, no defence (Bun)",
    command: ["bun", "bench/servers/shape.ts"],
  },
  B: { label: "B Palisade (Bun)", command: ["bun", "bench/servers/palisade.ts", "full"] },
  "C-string": {
    label: "C Express stack (Node), string secret",
    command: ["node", "bench/servers/express.mjs", "string"],
  },
  "C-key": {
    label: "C Express stack (Node), KeyObject",
    command: ["node", "bench/servers/express.mjs", "key"],
  },
  D: { label: "D Elysia plugin stack (Bun)", command: ["bun", "bench/servers/plugins.ts"] },
};

export const CHAT_BODY = '{"message":"How do I reset my password?"}';

export const ROUTES: Record<
  RouteId,
  { label: string; method: "GET" | "POST"; path: string; body?: string; token: boolean }
> = {
  health: { label: "GET /health", method: "GET", path: "/health", token: false },
  public: {
    label: "GET /bench (public, rate limited)",
    method: "GET",
    path: "/bench",
    token: false,
  },
  protected: {
    label: "POST /bench/protected (bearer JWT, body schema, rate limited)",
    method: "POST",
    path: "/bench/protected",
    body: BENCH_POST_BODY,
    token: true,
  },
  chat: {
    label: "POST /api/chat (B: offline provider; A: echo)",
    method: "POST",
    path: "/api/chat",
    body: CHAT_BODY,
    token: true,
  },
};

export interface Figure {
  server: ServerId;
  route: RouteId;
  rps: Summary;
  ratio: Summary;
  p50Ms: Summary;
  p99Ms: Summary;
  errors: number;
  /** The server's CPU time per request (µs) and its ratio A's / this one's, within each round. */
  cpuUs: Summary | null;
  cpuRatio: Summary | null;
  /** wrk's voluntary context switches per request: how often the server's send had to wake it. */
  wakeups: Summary | null;
  /** Other work on the measured cores, and time stolen from them, as shares of a core (per round). */
  otherCpu: Summary | null;
  steal: Summary | null;
}

export interface HttpResults {
  figures: Figure[];
  /** Peak RSS of each server over its rounds (median of the rounds' VmHWM), kB. */
  peakRssKb: Partial<Record<ServerId, Summary>>;
  /** Whether Palisade serves POST /api/chat (chat landed). */
  chat: boolean;
  rounds: number;
  seconds: number;
}

/** Whether Palisade serves `POST /api/chat` (chat has landed): the app is built here, not served. */
export function palisadeServesChat(dir: string): boolean {
  const bench = benchServices({ databasePath: join(dir, "chat-probe.db"), logs: "fd" });
  const { services } = bench;
  try {
    return createApp(services).routes.some(
      (route) => route.method === "POST" && route.path === "/api/chat",
    );
  } finally {
    bench.close();
  }
}

export async function benchToken(): Promise<string> {
  return new SignJWT({ role: "user" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("bench-user")
    .setIssuedAt()
    .setExpirationTime("2h")
    .sign(new TextEncoder().encode(BENCH_JWT_SECRET));
}

/** A short warm-up for the quick run: 300 requests per route, 32 at a time, from here. */
async function warmUp(port: number, routes: readonly RouteId[], token: string) {
  for (const route of routes) {
    const { method, path, body } = ROUTES[route];
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (ROUTES[route].token) headers.authorization = `Bearer ${token}`;
    for (let sent = 0; sent < 300; sent += 32) {
      await Promise.all(
        Array.from({ length: 32 }, () =>
          fetch(`http://127.0.0.1:${port}${path}`, { method, body, headers }).then((r) =>
            r.arrayBuffer(),
          ),
        ),
      );
    }
  }
}

interface Sample {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  cpuUsPerRequest: number | null;
  wakeupsPerRequest: number | null;
  otherCpuShare: number | null;
  stealShare: number | null;
  /** This round's ratios to A: its rate over A's, A's CPU per request over its own. */
  ratio: number | null;
  cpuRatio: number | null;
}

/** The summary of a figure every round measured, or null. */
function summarizeAll(values: readonly (number | null)[]): Summary | null {
  return values.length > 0 && values.every((v) => v !== null)
    ? summarize(values as number[])
    : null;
}

export async function measureHttp(options: {
  rounds: number;
  seconds: number;
  /** wrk on the protected route for this long; 0: a burst of 2,000 requests per route instead. */
  warmupSeconds: number;
  /** Leave GET /health out (the quick run, to stay under a minute). */
  skipHealth?: boolean;
  dir: string;
  log: (line: string) => void;
}): Promise<HttpResults> {
  const { rounds, seconds, warmupSeconds, dir, log } = options;
  const token = await benchToken();
  const samples = new Map<string, Sample[]>();
  const peaks: Partial<Record<ServerId, number[]>> = {};
  // A's echo is measured only when B has a chat route to compare it with.
  const chat = palisadeServesChat(dir);
  const order = Object.keys(SERVERS) as ServerId[];

  for (let round = 0; round < rounds; round++) {
    const bare: Partial<Record<RouteId, number>> = {};
    const bareCpu: Partial<Record<RouteId, number | null>> = {};
    for (const id of order) {
      const server = await startServer(SERVERS[id].command, {
        BENCH_DIR: dir,
        TRUST_PROXY: "loopback",
      });
      try {
        const serverToken = server.info.token ?? token;
        if (id === "B" && (server.info.chat === "yes") !== chat) {
          throw new Error("bench/servers/palisade.ts and palisadeServesChat disagree about chat");
        }
        const routes: RouteId[] = options.skipHealth
          ? ["public", "protected"]
          : ["health", "public", "protected"];
        if (chat && (id === "A" || id === "B")) routes.push("chat");
        const send = (route: RouteId, secs: number) =>
          runWrk({
            port: server.port,
            path: ROUTES[route].path,
            method: ROUTES[route].method,
            body: ROUTES[route].body,
            token: ROUTES[route].token ? serverToken : null,
            seconds: secs,
            serverPid: server.proc.pid,
          });
        // Warm-up, discarded: the JIT, Elysia's compiled handlers, SQLite's page cache.
        if (warmupSeconds > 0) await send("protected", warmupSeconds);
        else await warmUp(server.port, routes, serverToken);
        for (const route of routes) {
          const measured = await send(route, seconds);
          if (id === "A") {
            bare[route] = measured.rps;
            bareCpu[route] = measured.cpuUsPerRequest;
          }
          const floor = bare[route];
          const floorCpu = bareCpu[route];
          const sample: Sample = {
            ...measured,
            ratio: floor ? measured.rps / floor : null,
            cpuRatio:
              floorCpu && measured.cpuUsPerRequest ? floorCpu / measured.cpuUsPerRequest : null,
          };
          const key = `${id}/${route}`;
          samples.set(key, [...(samples.get(key) ?? []), sample]);
          if (sample.errors > 0)
            log(`  ! ${id} ${route}: ${sample.errors} errors or non-2xx answers`);
        }
        const memory = memoryOf(server.proc.pid);
        if (memory) peaks[id] = [...(peaks[id] ?? []), memory.peakKb];
      } finally {
        await server.stop();
      }
    }
    log(`  round ${round + 1}/${rounds} done`);
  }

  const figures: Figure[] = [];
  for (const [key, list] of samples) {
    const [server, route] = key.split("/") as [ServerId, RouteId];
    figures.push({
      server,
      route,
      rps: summarize(list.map((s) => s.rps)),
      ratio: summarize(list.flatMap((s) => (s.ratio === null ? [] : [s.ratio]))),
      p50Ms: summarize(list.map((s) => s.p50Ms)),
      p99Ms: summarize(list.map((s) => s.p99Ms)),
      errors: list.reduce((sum, s) => sum + s.errors, 0),
      cpuUs: summarizeAll(list.map((s) => s.cpuUsPerRequest)),
      cpuRatio: summarizeAll(list.map((s) => s.cpuRatio)),
      wakeups: summarizeAll(list.map((s) => s.wakeupsPerRequest)),
      otherCpu: summarizeAll(list.map((s) => s.otherCpuShare)),
      steal: summarizeAll(list.map((s) => s.stealShare)),
    });
  }
  const peakRssKb: HttpResults["peakRssKb"] = {};
  for (const id of order) if (peaks[id]) peakRssKb[id] = summarize(peaks[id]!);
  return { figures, peakRssKb, chat, rounds, seconds };
}
