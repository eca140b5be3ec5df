/**
 * A large body (over 16 KiB declared, or chunked) must arrive within the deadline, and at most a
 * budget of such bodies is read at once: a byte every few seconds held a connection and its buffer
 * for good, 1,500 of them 447 MB (probe 30a F4). Over a real socket, since what matters is what
 * Bun does with the connection.
 */
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { AppError } from "../../src/errors";
import { networkKeyOf } from "../../src/plugins/client-ip/resolve";
import { largeBodyReads } from "../../src/plugins/request-guard/large-bodies";
import type { RunningServer } from "../../src/server";
import { buildTestApp, send, serveInProcess, type TestApp } from "../support/app";
import { type SentryServer, startSentryServer } from "../support/sentry-server";
import { waitFor } from "../support/wait";

let sentry: SentryServer;
beforeAll(() => {
  sentry = startSentryServer();
});
afterAll(() => sentry.stop());

let current: { target: TestApp; server: RunningServer } | null = null;
afterEach(async () => {
  if (current) {
    await current.server.shutdown("test over");
    current.target.close();
  }
  current = null;
  sentry.envelopes.length = 0;
});

const DEADLINE_MS = 400;

function serve(budgetBytes?: number, clientBytes?: number, networkBytes?: number) {
  const target = buildTestApp({
    // Each trickle names its own address (X-Forwarded-For from loopback).
    env: {
      TRUST_PROXY: "loopback",
      RATE_LIMIT_ALLOW_CIDRS: "10.0.0.0/8,127.0.0.0/8,2001:db8::/32",
      SENTRY_DSN: sentry.dsn(),
    },
    largeBodies: largeBodyReads({
      deadlineMs: DEADLINE_MS,
      budgetBytes,
      clientBytes,
      networkBytes,
    }),
  });
  const server = serveInProcess(target);
  current = { target, server };
  return server;
}

interface Trickle {
  /** Everything the server sent, once it closed the connection or the test gave up. */
  answer: Promise<{ text: string; closed: boolean; afterMs: number }>;
  socket: Bun.Socket<undefined>;
  stop(): void;
}

/** A login from `from` over a socket of its own: `framing` is its body's headers and first bytes. */
async function login(port: number, from: string, framing: string): Promise<Trickle> {
  const chunks: Uint8Array[] = [];
  const started = performance.now();
  let finish: (closed: boolean) => void = () => {};
  const ended = new Promise<boolean>((resolve) => {
    finish = resolve;
  });
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data: (_socket, chunk) => {
        chunks.push(new Uint8Array(chunk));
      },
      close: () => finish(true),
      end: () => finish(true),
      error: () => finish(true),
    },
  });
  socket.write(
    `POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Forwarded-For: ${from}\r\nContent-Type: application/json\r\n${framing}`,
  );
  const giveUp = setTimeout(() => finish(false), 5_000);
  const answer = ended.then((closed) => {
    clearTimeout(giveUp);
    return {
      text: Buffer.concat(chunks).toString("utf8"),
      closed,
      afterMs: performance.now() - started,
    };
  });
  return { answer, socket, stop: () => socket.end() };
}

/**
 * A login whose body of `declared` bytes is sent `first` bytes at once, then a byte every 50 ms:
 * to its end when `complete`, else all but the last.
 */
async function trickle(
  port: number,
  declared: number,
  first: number,
  complete = false,
  from = "10.9.9.9",
): Promise<Trickle> {
  const sending = await login(
    port,
    from,
    `Content-Length: ${declared}\r\n\r\n${" ".repeat(first)}`,
  );
  let sent = first;
  const drip = setInterval(() => {
    if (sent < (complete ? declared : declared - 1)) {
      sending.socket.write(" ");
      sent++;
    }
  }, 50);
  sending.answer.then(() => clearInterval(drip));
  return {
    ...sending,
    stop: () => {
      clearInterval(drip);
      sending.stop();
    },
  };
}

test("a large body trickled past the deadline is answered 408 and its connection closed, however many bytes keep coming", async () => {
  const server = serve();
  const slow = await trickle(Number(server.url.port), 32 * 1024, 1000);
  const { text, closed, afterMs } = await slow.answer;
  expect(text).toStartWith("HTTP/1.1 408");
  expect(text.toLowerCase()).toContain("connection: close");
  expect(text).toContain('"code":"REQUEST_TIMEOUT"');
  expect(closed).toBe(true);
  expect(afterMs).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
  expect(afterMs).toBeLessThan(3_000);
});

test("past the budget of large bodies at once, the next is refused 503 before it is read; room comes back", async () => {
  const server = serve(40 * 1024);
  const port = Number(server.url.port);
  const holding = await trickle(port, 32 * 1024, 1000, false, "10.0.0.1");
  await Bun.sleep(100);
  const refused = await trickle(port, 32 * 1024, 1000, false, "10.0.0.2");
  const second = await refused.answer;
  expect(second.text).toStartWith("HTTP/1.1 503");
  expect(second.text.toLowerCase()).toContain("connection: close");
  expect(second.text.toLowerCase()).toContain("retry-after: 1");
  expect(second.closed).toBe(true);
  expect(second.afterMs).toBeLessThan(DEADLINE_MS);
  // The first ends at its deadline, and gives its room back.
  expect((await holding.answer).text).toStartWith("HTTP/1.1 408");
  const body = JSON.stringify({ email: "a@b.test", password: "x".repeat(20 * 1024) });
  const whole = await fetch(new URL("/api/auth/login", server.url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  expect(whole.status).not.toBe(503);
  expect(whole.status).not.toBe(408);
});

test("a small body is read as it comes, with no deadline of its own", async () => {
  const server = serve();
  const slow = await trickle(Number(server.url.port), 1200, 1190, true);
  const { text } = await slow.answer;
  // Its ten last bytes took ~500 ms, past the large bodies' deadline: answered on its merits.
  expect(text).not.toStartWith("HTTP/1.1 408");
  expect(text).toMatch(/^HTTP\/1\.1 (400|422)/);
});

test("the time a body takes to arrive is the client's: in the access line's duration, never in the request-duration histogram the latency alert reads (probe 89a F3)", async () => {
  const server = serve();
  const target = current!.target;
  // 40 bytes at 50 ms: ~2 s to arrive, then answered on its merits at once.
  const slow = await trickle(Number(server.url.port), 1200, 1160, true);
  const { text, afterMs } = await slow.answer;
  expect(text).toMatch(/^HTTP\/1\.1 (400|422)/);
  expect(afterMs).toBeGreaterThanOrEqual(1500);
  await waitFor(() =>
    target.logs.entries.some((e) => e.msg === "request" && e.route === "/api/auth/login"),
  );
  const line = target.logs.entries.find(
    (e) => e.msg === "request" && e.route === "/api/auth/login",
  )!;
  expect(line.durationMs as number).toBeGreaterThanOrEqual(1500);
  const metrics = await (await send(target, "/metrics")).text();
  const series = 'method="POST",route="/api/auth/login"';
  expect(metrics).toContain(`http_request_duration_seconds_count{${series}} 1`);
  expect(metrics).toContain(`http_request_duration_seconds_bucket{le="0.5",${series}} 1`);
});

test("one client holds at most its share of the budget: its next large body is refused 429, another client's is read", async () => {
  const server = serve(undefined, 40 * 1024);
  const port = Number(server.url.port);
  const first = await trickle(port, 32 * 1024, 1000, false, "10.0.0.7");
  await Bun.sleep(100);
  const again = await (await trickle(port, 32 * 1024, 1000, false, "10.0.0.7")).answer;
  expect(again.text).toStartWith("HTTP/1.1 429");
  expect(again.text).toContain('"code":"RATE_LIMITED"');
  expect(again.text.toLowerCase()).toContain("connection: close");
  expect(again.afterMs).toBeLessThan(DEADLINE_MS);
  // Another address is read as usual (and times out at the deadline, as it never finishes).
  const other = await (await trickle(port, 32 * 1024, 1000, false, "10.0.0.8")).answer;
  expect(other.text).toStartWith("HTTP/1.1 408");
  expect((await first.answer).text).toStartWith("HTTP/1.1 408");
});

test("an address past its own share gets 429 for every further body, never a 5xx: a warning, not sent to Sentry; only the whole budget full is 503 (probe 44a F1)", async () => {
  // Room for three bodies at once, one a client: an address alone cannot fill it.
  const server = serve(3 * 32 * 1024, 40 * 1024);
  const port = Number(server.url.port);
  const target = current!.target;
  const holding = await trickle(port, 32 * 1024, 1000, false, "10.1.0.1");
  await Bun.sleep(100);
  const again = await Promise.all(
    Array.from(
      { length: 8 },
      async () => (await trickle(port, 32 * 1024, 1000, false, "10.1.0.1")).answer,
    ),
  );
  for (const { text, closed, afterMs } of again) {
    expect(text).toStartWith("HTTP/1.1 429");
    expect(text).toContain('"code":"RATE_LIMITED"');
    expect(text.toLowerCase()).toContain("retry-after: 1\r\n");
    expect(text.toLowerCase()).toContain("connection: close");
    expect(closed).toBe(true);
    expect(afterMs).toBeLessThan(DEADLINE_MS);
  }
  const refusedLines = () =>
    target.logs.entries.filter((entry) => entry.msg === "request" && entry.status === 429);
  await waitFor(() => refusedLines().length === 8, { what: "the 429s' access lines" });
  expect(new Set(refusedLines().map((entry) => entry.level))).toEqual(new Set(["warn"]));
  // Counted with the limiter's 429s, as the dashboards and the spike alert read them.
  expect(await target.services.registry.metrics()).toContain(
    'rate_limit_rejections_total{policy="large_bodies"} 8',
  );
  expect(await target.services.errors.flush(5000)).toBe(true);
  expect(sentry.events()).toEqual([]);

  // Two more addresses fill the budget: the service is full, and a fourth address is told so.
  const others = [
    await trickle(port, 32 * 1024, 1000, false, "10.2.0.1"),
    await trickle(port, 32 * 1024, 1000, false, "10.3.0.1"),
  ];
  await Bun.sleep(100);
  const full = await (await trickle(port, 32 * 1024, 1000, false, "10.4.0.1")).answer;
  expect(full.text).toStartWith("HTTP/1.1 503");
  expect(full.text).toContain('"code":"SERVICE_UNAVAILABLE"');
  expect(full.text.toLowerCase()).toContain("retry-after: 1\r\n");
  await waitFor(() => sentry.events().length === 1, { what: "the 503 event" });
  expect((sentry.events()[0]!.tags as Record<string, string>).code).toBe("SERVICE_UNAVAILABLE");
  for (const other of others) expect((await other.answer).text).toStartWith("HTTP/1.1 408");
  expect((await holding.answer).text).toStartWith("HTTP/1.1 408");
});

test("a body past its client's share is told to come back when the oldest of that client's bodies will have ended", async () => {
  let now = 1_000_000;
  const reads = largeBodyReads({ deadlineMs: 20_000, clientBytes: 40 * 1024, now: () => now });
  let finish: (text: string) => void = () => {};
  const first = reads.read(
    32 * 1024,
    "203.0.113.5",
    () =>
      new Promise<string>((resolve) => {
        finish = resolve;
      }),
  );
  now += 5_500;
  const refused = await reads
    .read(32 * 1024, "203.0.113.5", () => Promise.resolve("never read"))
    .catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(AppError);
  expect((refused as AppError).status).toBe(429);
  expect((refused as AppError).code).toBe("RATE_LIMITED");
  // The first body's deadline is 14.5 s away.
  expect((refused as AppError).headers).toEqual({ "retry-after": "15", connection: "close" });
  finish("done");
  expect(await first).toBe("done");
  // Its room came back with its end.
  expect(await reads.read(32 * 1024, "203.0.113.5", () => Promise.resolve("read"))).toBe("read");
});

test("one network (an IPv6 /48, an IPv4 /24) holds at most its share: another /64 of it is refused, another network's client is read (probe 30f F2)", async () => {
  const server = serve(undefined, undefined, 40 * 1024);
  const port = Number(server.url.port);
  const first = await trickle(port, 32 * 1024, 1000, false, "2001:db8:1:1::1");
  await Bun.sleep(100);
  const sameSite = await (await trickle(port, 32 * 1024, 1000, false, "2001:db8:1:2::1")).answer;
  expect(sameSite.text).toStartWith("HTTP/1.1 429");
  expect(sameSite.text).toContain('"code":"RATE_LIMITED"');
  expect(sameSite.afterMs).toBeLessThan(DEADLINE_MS);
  const otherSite = await (await trickle(port, 32 * 1024, 1000, false, "2001:db8:2:1::1")).answer;
  expect(otherSite.text).toStartWith("HTTP/1.1 408");
  expect((await first.answer).text).toStartWith("HTTP/1.1 408");
  // Its room came back with the first body's end.
  const again = await (await trickle(port, 32 * 1024, 1000, false, "2001:db8:1:3::1")).answer;
  expect(again.text).toStartWith("HTTP/1.1 408");
});

test("the networks client keys belong to", () => {
  expect(networkKeyOf("198.51.100.7")).toBe("198.51.100.0/24");
  expect(networkKeyOf("2001:db8:1:2::/64")).toBe("2001:db8:1::/48");
  expect(networkKeyOf("2001:db8::/64")).toBe("2001:db8::/48");
  // A translated IPv4 client is its IPv4 address's /24, not the translator's one /48.
  expect(networkKeyOf("64:ff9b::c633:6407/128")).toBe("198.51.100.0/24");
  // 6to4: each IPv4 host's own /48, its IPv4 address in bits 16–47 (probe 31b F7).
  expect(networkKeyOf("2002:c633:6407:1::/64")).toBe("198.51.100.0/24");
  expect(networkKeyOf("2002:c633:64ff::/64")).toBe("198.51.100.0/24");
  expect(networkKeyOf("unknown")).toBe("unknown");
});

test("a chunked body is charged what arrives: many small ones from one client pass, one growing past the share is refused", async () => {
  const server = serve(undefined, 8 * 1024);
  // Requests built in process carry no Content-Length: read as chunked, each charged its bytes.
  const target = current!.target;
  const answers = await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      target.app.handle(
        new Request("http://localhost/api/auth/refresh", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ refreshToken: `pal_rt_not-a-token-${i}` }),
        }),
      ),
    ),
  );
  expect(answers.map((answer) => answer.status)).toEqual(Array(30).fill(401));

  // Over a socket, two chunked bodies from one client: together past its 8 KiB share.
  const port = Number(server.url.port);
  const chunked = (size: number) =>
    login(
      port,
      "10.0.0.9",
      `Transfer-Encoding: chunked\r\n\r\n${size.toString(16)}\r\n${" ".repeat(size)}\r\n`,
    );
  const first = await chunked(6 * 1024);
  await Bun.sleep(100);
  const second = await chunked(6 * 1024);
  expect((await second.answer).text).toStartWith("HTTP/1.1 429");
  first.stop();
});
