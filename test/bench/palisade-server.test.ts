/**
 * The bench's Palisade server (B) answers every route the bench loads with 2xx: a figure measured
 * on refusals (a token the server does not accept, a chat turn for an account it does not believe)
 * measures nothing. `bun run bench` is not run by the suite; this is what it relies on.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { CHAT_BODY } from "../../bench/http";
import { BENCH_POST_BODY } from "../../bench/servers/payload";
import { tempDir } from "../support/app";
import { freePort, REPO_ROOT } from "../support/process";

const dir = tempDir("palisade-bench-server-");
let server: Subprocess<"ignore", "ignore", "pipe">;
let base: string;
let token: string;

beforeAll(async () => {
  const port = freePort();
  server = Bun.spawn(["bun", join(REPO_ROOT, "bench/servers/palisade.ts"), "full", String(port)], {
    cwd: REPO_ROOT,
    env: { ...process.env, BENCH_DIR: dir.path },
    stdout: "ignore",
    stderr: "pipe",
  });
  let said = "";
  const decoder = new TextDecoder();
  for await (const chunk of server.stderr) {
    said += decoder.decode(chunk);
    if (/ready \d+/.test(said)) break;
  }
  token = /token (\S+)/.exec(said)![1]!;
  base = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  server.kill("SIGINT");
  await server.exited;
  dir.remove();
});

test("GET /bench, POST /bench/protected and POST /api/chat each answer 2xx", async () => {
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  const open = await fetch(`${base}/bench`);
  expect(open.status).toBe(200);
  const protectedRoute = await fetch(`${base}/bench/protected`, {
    method: "POST",
    headers,
    body: BENCH_POST_BODY,
  });
  expect(protectedRoute.status).toBe(200);
  const chat = await fetch(`${base}/api/chat`, { method: "POST", headers, body: CHAT_BODY });
  expect(chat.status).toBe(200);
});
