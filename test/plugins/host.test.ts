/**
 * The Host header, through a real listening server with exact bytes on a socket (fetch sets its
 * own Host). Whatever Host says, the router, every stage and the access log see the real path;
 * a malformed Host is 400 in every profile; with ALLOWED_HOSTS, an unlisted one is 400 too.
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import type { RunningServer } from "../../src/server";
import { buildTestApp, PRODUCTION_ENV, serveInProcess, type TestApp } from "../support/app";

interface RawResponse {
  status: number;
  text: string;
}

let sequence = 0;

/** Sends one HTTP/1.1 request as bytes; `host` null sends no Host line at all. */
function rawRequest(
  server: RunningServer,
  host: string | null,
  path: string,
): Promise<RawResponse & { requestId: string }> {
  const requestId = `host-test-${++sequence}`;
  const head =
    `GET ${path} HTTP/1.1\r\n` +
    (host === null ? "" : `Host: ${host}\r\n`) +
    `X-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n`;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(Number(server.url.port), "127.0.0.1", () =>
      socket.write(Buffer.from(head, "utf8")),
    );
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ status, text, requestId });
    });
  });
}

function serve(env: Record<string, string> = {}) {
  const target = buildTestApp({
    env: { RATE_LIMIT_PER_MINUTE: "100000", RATE_LIMIT_BURST: "100000", ...env },
  });
  const server = serveInProcess(target);
  return { target, server };
}

async function accessLine(target: TestApp, requestId: string) {
  for (let i = 0; i < 50; i++) {
    const line = target.logs.entries.find((e) => e.msg === "request" && e.requestId === requestId);
    if (line) return line as { route: string; path?: string; status: number };
    await Bun.sleep(5);
  }
  throw new Error(`no access line for ${requestId}`);
}

const MALFORMED = [
  "", // Bun passes an empty Host through
  "a b",
  "user@host",
  "u:p@host",
  "x/zz",
  "host/",
  "x?y",
  "x#y",
  "a\\b",
  "%41",
  "h:",
  "h:0",
  "h:99999",
  "h:abc",
  "h:-1",
  "h:80:80",
  "héllo", // non-ASCII (sent as UTF-8)
  "bücher.example",
  "-a.example",
  "a-.example",
  "a..b",
  ".example",
  "::1", // IPv6 without brackets
  "[::1",
  "[1.2.3.4]",
  "[fe80::1%eth0]",
  "010.1.1.1", // a numeric host is an IPv4 address, and only its canonical spelling is one
  "0x7f.1",
  "127.1",
  "2130706433",
  `${"a".repeat(64)}.example`, // a label over 63 characters
];

describe("any well-formed host (development, ALLOWED_HOSTS unset)", () => {
  const { target, server } = serve();
  afterAll(async () => {
    await server.shutdown("test over");
    target.close();
  });

  const WELL_FORMED = [
    "x",
    "ab:1",
    "abc",
    "localhost",
    `localhost:${server.url.port}`,
    "127.0.0.1:9",
    "[::1]:80",
    "EXAMPLE.test.",
  ];

  test.each(WELL_FORMED)("Host %p: the router and the log see the real path", async (host) => {
    const health = await rawRequest(server, host, "/health");
    expect(health.status).toBe(200);
    expect(health.text).toContain('{"status":"ok"}');

    const shifted = await rawRequest(server, host, "/zz/health");
    expect(shifted.status).toBe(404);
    expect(shifted.text).toContain('"code":"NOT_FOUND"');
    expect(await accessLine(target, shifted.requestId)).toMatchObject({
      path: "/zz/health",
      status: 404,
    });

    const withQuery = await rawRequest(server, host, "/zz/health?a=1");
    expect(withQuery.status).toBe(404);

    const me = await rawRequest(server, host, "/api/auth/me");
    expect(me.status).toBe(401);
  });

  test.each(MALFORMED)(
    "malformed Host %p is 400 BAD_HEADER, logged with the real path",
    async (host) => {
      for (const path of ["/health", "/zz/health", "/api/admin/x/health"]) {
        const response = await rawRequest(server, host, path);
        expect(response.status).toBe(400);
        expect(response.text).toContain('"code":"BAD_HEADER"');
        expect(await accessLine(target, response.requestId)).toMatchObject({ path, status: 400 });
      }
    },
  );

  test("the refusal is audited with the real route", async () => {
    // A server of its own: the tests above refused this address already, and a refusal of one
    // address and code is audited once a minute (audit/once-per-window).
    const own = serve();
    try {
      const response = await rawRequest(own.server, "a b", "/api/admin/x/health");
      expect(response.status).toBe(400);
      own.target.services.audit.flush();
      const rows = own.target.db.$client
        .query("SELECT route FROM audit_events WHERE type = 'request.rejected' AND request_id = ?")
        .all(response.requestId) as { route: string }[];
      expect(rows).toEqual([{ route: "GET /api/admin/x/health" }]);
    } finally {
      await own.server.shutdown("test over");
      own.target.close();
    }
  });

  test("a blocked address does not reach /health's exemption through a short Host", async () => {
    target.services.ipBlocks.block({
      address: "127.0.0.1",
      reason: "test",
      ttlMs: 60_000,
      source: "admin",
      createdBy: "test",
    });
    await Bun.sleep(1_100); // the in-memory copy reloads at most once a second
    const shifted = await rawRequest(server, "x", "/zz/health");
    expect(shifted.status).toBe(403);
    expect(shifted.text).toContain('"code":"IP_BLOCKED"');
    expect((await rawRequest(server, "x", "/health")).status).toBe(200);
  });
});

describe("ALLOWED_HOSTS (production)", () => {
  const { target, server } = serve({
    ...PRODUCTION_ENV,
    ALLOWED_HOSTS: "api.example.test, [2001:DB8::1]",
  });
  afterAll(async () => {
    await server.shutdown("test over");
    target.close();
  });

  test.each([
    "api.example.test",
    "API.Example.Test",
    "api.example.test.:8443",
    "[2001:db8::1]:443",
  ])("Host %p is listed (case, trailing dot and port ignored)", async (host) => {
    expect((await rawRequest(server, host, "/health")).status).toBe(200);
    expect((await rawRequest(server, host, "/zz/health")).status).toBe(404);
  });

  test.each([
    "localhost",
    "127.0.0.1",
    "evil.test",
    "api.example.test.evil.test",
    "x",
    ...MALFORMED,
  ])("Host %p is 400 BAD_HEADER", async (host) => {
    for (const path of ["/health", "/zz/health"]) {
      const response = await rawRequest(server, host, path);
      expect(response.status).toBe(400);
      expect(response.text).toContain('"code":"BAD_HEADER"');
      expect(await accessLine(target, response.requestId)).toMatchObject({ path });
    }
  });
});

test("without a Host line, HTTP/1.1 is refused", async () => {
  const { target, server } = serve();
  try {
    expect((await rawRequest(server, null, "/health")).status).toBe(400);
  } finally {
    await server.shutdown("test over");
    target.close();
  }
});
