/**
 * A client that resets its connection right after sending leaves a socket with no peer address:
 * served as `unknown`, its request passed the address block (an account registered from a blocked
 * address) and each of its refusals was audited, blocking no one (probe 87b F1). Over a real
 * socket: such a request is 499, logged and counted, and no stage after the address runs.
 */
import { afterEach, expect, test } from "bun:test";
import net from "node:net";
import type { RunningServer } from "../../src/server";
import { buildTestApp, serveInProcess, type TestApp } from "../support/app";
import { waitFor } from "../support/wait";

let current: TestApp | null = null;
let server: RunningServer | null = null;
afterEach(async () => {
  await server?.shutdown("test over");
  server = null;
  current?.close();
  current = null;
});

/** Sends `raw` and resets the connection (RST, not FIN) as soon as it is written. */
function sendAndReset(url: URL, raw: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => {
      socket.write(raw, () => {
        socket.resetAndDestroy();
        resolve();
      });
    });
    socket.on("error", reject);
  });
}

const registration = (email: string) => {
  const body = JSON.stringify({ email, password: "correct horse battery staple 9" });
  return `POST /api/auth/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

const accessLines = (target: TestApp) =>
  target.logs.entries.filter(
    (entry) => entry.msg === "request" && entry.path === "/api/auth/register",
  );

test("a blocked address that resets its connection after sending is not served: no account, 499 logged", async () => {
  current = buildTestApp({ peerFromSocket: true });
  const target = current;
  server = serveInProcess(target);
  target.services.ipBlocks.block({
    address: "127.0.0.1",
    reason: "test",
    ttlMs: 60 * 60_000,
    source: "admin",
  });
  // Read from its socket, loopback is blocked.
  const plain = await fetch(new URL("/api/auth/register", server.url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      email: "plain@example.com",
      password: "correct horse battery staple 9",
    }),
  });
  expect(plain.status).toBe(403);
  expect(((await plain.json()) as { code: string }).code).toBe("IP_BLOCKED");

  for (let i = 0; i < 3; i++) await sendAndReset(server.url, registration(`reset${i}@example.com`));
  await waitFor(() => accessLines(target).length === 4);
  expect(accessLines(target).map((line) => [line.status, line.clientIp])).toEqual([
    [403, "127.0.0.1"],
    [499, "unknown"],
    [499, "unknown"],
    [499, "unknown"],
  ]);
  expect(target.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 0 });
  target.services.audit.flush();
  expect(
    target.db.$client.query("SELECT count(*) AS n FROM audit_events WHERE ip = 'unknown'").get(),
  ).toEqual({ n: 0 });
});

test("refusals of a client whose address is unknown are audited once per key and window, as refusals that block no one are", async () => {
  current = buildTestApp({
    peerFromSocket: true,
    env: { RATE_LIMIT_PER_MINUTE: "2", RATE_LIMIT_BURST: "2" },
  });
  const target = current;
  // `app.handle` has no socket: the address is unknown, as it was for a reset before this release.
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) {
    statuses.push((await target.app.handle(new Request("http://localhost/openapi.json"))).status);
  }
  expect(statuses.filter((status) => status === 429).length).toBeGreaterThanOrEqual(5);
  target.services.audit.flush();
  expect(
    target.db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE type = 'ratelimit.rejected'")
      .get(),
  ).toEqual({ n: 1 });
  expect(target.services.ipBlocks.listActive()).toEqual([]);
});
