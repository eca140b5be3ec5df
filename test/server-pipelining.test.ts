/**
 * HTTP/1.1 pipelining through a real listening server (README, Security notes: "Pipelined requests
 * are not served"). Bun's server closes a connection on which it parses a request while the answer
 * to the one before is still pending, so both are lost whenever the first answer waits past its
 * event-loop turn; an answer made at once lets the next request through. This test keeps that
 * note true: when a Bun release serves pipelined requests behind a pending answer, the second
 * case fails, and the note (and this test) should go.
 */
import { afterAll, expect, test } from "bun:test";
import { buildTestApp, serveInProcess } from "./support/app";
import { rawHttp } from "./support/raw-http";

const target = buildTestApp({
  env: { RATE_LIMIT_PER_MINUTE: "100000", RATE_LIMIT_BURST: "100000" },
});
const server = serveInProcess(target);
const port = Number(server.url.port);
afterAll(async () => {
  await server.shutdown("test");
  target.close();
});

const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
const statusLines = (text: string) => text.match(/HTTP\/1\.1 \d{3}/g) ?? [];

test("two pipelined probes are both answered: /health answers at once", async () => {
  const response = await rawHttp(port, get("/health") + get("/health"), 1000);
  expect(statusLines(response.text)).toEqual(["HTTP/1.1 200", "HTTP/1.1 200"]);
});

test("a request pipelined behind a rate-limited one closes the connection unanswered (Bun)", async () => {
  // The limiter's store decides a new client's first request at the next event-loop turn.
  const response = await rawHttp(port, get("/openapi.json") + get("/health"), 2000);
  expect(response.text).toBe("");
  // The same requests one after another on fresh connections are answered.
  expect(
    (await rawHttp(port, `${get("/openapi.json").slice(0, -2)}Connection: close\r\n\r\n`)).status,
  ).toBe(200);
});

test("plain Bun.serve does the same when its answer waits a turn: the limit is Bun's", async () => {
  const plain = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      if (new URL(request.url).pathname === "/wait") await Bun.sleep(1);
      return new Response("ok");
    },
  });
  try {
    const atOnce = await rawHttp(plain.port!, get("/now") + get("/now"), 1000);
    expect(statusLines(atOnce.text)).toEqual(["HTTP/1.1 200", "HTTP/1.1 200"]);
    const waiting = await rawHttp(plain.port!, get("/wait") + get("/now"), 2000);
    expect(waiting.text).toBe("");
  } finally {
    plain.stop(true);
  }
});
