import { afterEach, describe, expect, test } from "bun:test";
import { t } from "elysia";
import { users } from "../../src/db/schema";
import { trimOptionalWhitespace } from "../../src/optional-whitespace";
import { parseForwardedEntry } from "../../src/plugins/client-ip/resolve";
import { buildTestApp, send, serveInProcess, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function guardedApp() {
  current = buildTestApp({
    env: { RATE_LIMIT_PER_MINUTE: "10000", RATE_LIMIT_BURST: "10000" },
    routeClasses: [
      { routes: ["POST /api/echo"] },
      { routes: ["POST /api/chat-echo"], bodyLimit: "chat" },
      { routes: ["POST /webhooks/test"], bodyLimit: "webhooks", csrfExempt: true },
      {
        routes: ["POST /webhooks/exact"],
        bodyLimit: "webhooks",
        csrfExempt: true,
        exactBytes: true,
      },
    ],
  });
  /** What a handler was handed: the parsed body, and the bytes as sent where it gets them. */
  const received = (context: { [name: string]: unknown }) => {
    // Unset, each is the `null` or `undefined` the webhook modules decorate the context with.
    const { rawBytes, rawBody } = context as { rawBytes?: Uint8Array | null; rawBody?: string };
    return {
      body: context.body,
      rawBytes: rawBytes ? [...rawBytes] : null,
      rawBody: rawBody ?? null,
    };
  };
  const app = current.app
    .post("/api/received", received)
    .post("/webhooks/exact", received)
    .post("/api/echo", ({ body }) => ({ length: JSON.stringify(body).length }), {
      body: t.Object({ text: t.String() }),
    })
    .post("/api/chat-echo", ({ body }) => ({ length: JSON.stringify(body).length }), {
      body: t.Object({ message: t.String() }),
    })
    .post("/webhooks/test", ({ body }) => ({ ok: body !== undefined }));
  return { ...current, app };
}

async function codeOf(response: Response) {
  return ((await response.json()) as { code: string }).code;
}

describe("body limits", () => {
  test("a declared Content-Length over the route class's limit is 413 before parsing", async () => {
    const target = guardedApp();
    const justOver = JSON.stringify({ text: "x".repeat(64 * 1024) });
    const refused = await send(target, "/api/echo", { body: justOver });
    expect(refused.status).toBe(413);
    expect(await codeOf(refused)).toBe("PAYLOAD_TOO_LARGE");
    const fits = await send(target, "/api/echo", { body: { text: "x".repeat(60 * 1024) } });
    expect(fits.status).toBe(200);
  });

  test("a route class's body limit applies: chat 48 KiB, webhooks 256 KiB", async () => {
    const target = guardedApp();
    const chat = await send(target, "/api/chat-echo", { body: { message: "x".repeat(49 * 1024) } });
    expect(chat.status).toBe(413);
    const webhook = await send(target, "/webhooks/test", {
      body: { data: "x".repeat(200 * 1024) },
    });
    expect(webhook.status).toBe(200);
  });

  test("a chunked body is cut off while streaming once it passes the limit", async () => {
    const target = guardedApp();
    let sent = 0;
    const chunk = new TextEncoder().encode("x".repeat(16 * 1024));
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"text":"'));
      },
      pull(controller) {
        // An endless body: the reader must stop, not this stream.
        sent += chunk.byteLength;
        controller.enqueue(chunk);
      },
    });
    const request = new Request("http://localhost/api/echo", {
      method: "POST",
      headers: { "content-type": "application/json", "transfer-encoding": "chunked" },
      body: stream,
      duplex: "half",
    });
    const response = await target.app.handle(request);
    expect(response.status).toBe(413);
    expect(sent).toBeLessThan(256 * 1024);
  });

  test("a real server refuses a chunked body past the limit", async () => {
    const target = guardedApp();
    const running = serveInProcess(target);
    try {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(`{"text":"${"y".repeat(100 * 1024)}"}`));
          controller.close();
        },
      });
      const response = await fetch(new URL("/api/echo", running.url), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      expect(response.status).toBe(413);
      expect(((await response.json()) as { code: string }).code).toBe("PAYLOAD_TOO_LARGE");
    } finally {
      await running.shutdown("test");
    }
  });
});

describe("how a body is read", () => {
  // A JSON string holding a byte-order mark, bytes that are not UTF-8 (a lone 0xFF, an encoded
  // surrogate, an overlong slash) and a cut-off four-byte sequence, after a leading byte-order mark.
  const sent = new Uint8Array([
    0xef,
    0xbb,
    0xbf,
    ...new TextEncoder().encode('{"text":"a'),
    0xef,
    0xbb,
    0xbf,
    0xff,
    0xed,
    0xa0,
    0x80,
    0xc0,
    0xaf,
    0xf0,
    0x9f,
    0x98,
    ...new TextEncoder().encode('é"}'),
  ]);
  const post = (
    target: TestApp,
    path: string,
    body: Uint8Array | ReadableStream<Uint8Array>,
    headers: Record<string, string>,
  ) =>
    target.app.handle(
      new Request(`http://localhost${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body,
        duplex: "half",
      } as RequestInit),
    );

  test("only a route class marked exactBytes is handed the bytes as sent; both decode them alike", async () => {
    const target = guardedApp();
    const declared = { "content-length": String(sent.byteLength) };
    const text = await post(target, "/api/received", sent, declared);
    const exact = await post(target, "/webhooks/exact", sent, declared);
    expect(text.status).toBe(200);
    expect(exact.status).toBe(200);
    const asText = (await text.json()) as { body: unknown; rawBytes: unknown; rawBody: unknown };
    const asBytes = (await exact.json()) as { body: unknown; rawBytes: number[]; rawBody: string };
    expect(asText.rawBytes).toBeNull();
    expect(asText.rawBody).toBeNull();
    expect(asBytes.rawBytes).toEqual([...sent]);
    // An exactBytes route's body is its text, parsed by its handler once the signature verifies
    // (probe 89d F5): the same text, decoded alike.
    expect(asBytes.body).toBe(asBytes.rawBody);
    expect(asText.body).toEqual(JSON.parse(asBytes.rawBody));
    expect(asText.body).toEqual({ text: "a\ufeff\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffdé" });
  });

  test("a chunked body of the text route decodes as a declared one does", async () => {
    const target = guardedApp();
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(sent.slice(0, 5));
        controller.enqueue(sent.slice(5));
        controller.close();
      },
    });
    const chunked = await post(target, "/api/received", stream, { "transfer-encoding": "chunked" });
    const declared = await post(target, "/api/received", sent, {
      "content-length": String(sent.byteLength),
    });
    expect(chunked.status).toBe(200);
    expect(await chunked.json()).toEqual(await declared.json());
  });
});

describe("content types", () => {
  test("a body that is not JSON is 415", async () => {
    const target = guardedApp();
    const form = await send(target, "/api/echo", {
      body: "text=hello",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expect(form.status).toBe(415);
    expect(await codeOf(form)).toBe("UNSUPPORTED_MEDIA_TYPE");
    const latin1 = await send(target, "/api/echo", {
      body: '{"text":"a"}',
      headers: { "content-type": "application/json; charset=iso-8859-1" },
    });
    expect(latin1.status).toBe(415);
    const utf8 = await send(target, "/api/echo", {
      body: '{"text":"a"}',
      headers: { "content-type": "application/json; charset=UTF-8" },
    });
    expect(utf8.status).toBe(200);
  });

  test("a Content-Type parameter is read as RFC 9110 spells one: a malformed one is 415, as another charset is (probe 90e F2)", async () => {
    const target = guardedApp();
    const body = '{"text":"a"}';
    const statusOf = async (contentType: string) =>
      (await send(target, "/api/echo", { body, headers: { "content-type": contentType } })).status;
    for (const contentType of [
      'application/json; charset="utf-8',
      'application/json; charset=utf-8"',
      "application/json; charset=utf-8=latin1",
      "application/json; charset",
      "application/json; charset=",
      "application/json; =utf-8",
      "application/json; charset=utf 8",
      'application/json; charset="utf-8"x',
      "application/json; charset=utf-8; charset=latin1",
      'application/json; x="a;charset=utf-8"',
    ]) {
      expect({ contentType, status: await statusOf(contentType) }).toEqual({
        contentType,
        status: 415,
      });
    }
    for (const contentType of [
      'application/json; charset="utf-8"',
      'application/json; charset="UTF-8"; profile="a b"',
      'application/json; charset="utf\\-8"',
      "application/json;",
      "application/json; ; charset=utf-8",
      "Application/JSON;Charset=UTF-8",
    ]) {
      expect({ contentType, status: await statusOf(contentType) }).toEqual({
        contentType,
        status: 200,
      });
    }
  });

  test("a body with a content coding is 415, whatever it holds; identity is the body as sent", async () => {
    const target = guardedApp();
    const plain = '{"text":"a"}';
    for (const [coding, body] of [
      ["gzip", plain],
      ["gzip", Bun.gzipSync(plain)],
      ["GZIP", plain],
      ["br", plain],
      ["deflate", plain],
      ["identity, gzip", plain],
      ["x-anything", plain],
    ] as const) {
      const response = await send(target, "/api/echo", {
        body,
        headers: { "content-type": "application/json", "content-encoding": coding },
      });
      expect({ coding, status: response.status }).toEqual({ coding, status: 415 });
      expect(await codeOf(response)).toBe("UNSUPPORTED_MEDIA_TYPE");
    }
    const identity = await send(target, "/api/echo", {
      body: plain,
      headers: { "content-type": "application/json", "content-encoding": " Identity " },
    });
    expect(identity.status).toBe(200);
  });

  test("only space and tab are whitespace around a media type, a coding or a charset: U+00A0 (byte 0xA0), which String.trim strips, makes it another type, 415 (probe 15a F3)", async () => {
    const target = guardedApp();
    const body = '{"text":"a"}';
    const refused: Array<[string, string]> = [];
    for (const space of ["\u00a0"]) {
      refused.push(
        ["content-type", `application/json${space}`],
        ["content-type", `${space}application/json`],
        ["content-type", `application/json; charset=utf-8${space}`],
      );
    }
    for (const [name, value] of refused) {
      const headers: Record<string, string> = { "content-type": "application/json", [name]: value };
      const response = await target.app.handle(
        new Request("http://localhost/api/echo", {
          method: "POST",
          headers,
          body: new Blob([body]),
        }),
      );
      expect({ value, status: response.status }).toEqual({ value, status: 415 });
    }
    const coding = await send(target, "/api/echo", {
      body,
      headers: { "content-type": "application/json", "content-encoding": "identity\u00a0" },
    });
    expect(coding.status).toBe(415);
    // Space and tab are: inside the value, around the type and its parameters.
    const spaced = await send(target, "/api/echo", {
      body,
      headers: { "content-type": "application/json \t; \tcharset=utf-8 " },
    });
    expect(spaced.status).toBe(200);
  });

  test("a body without Content-Type is 415", async () => {
    const target = guardedApp();
    const response = await target.app.handle(
      new Request("http://localhost/api/echo", {
        method: "POST",
        body: new Blob(['{"text":"a"}']),
      }),
    );
    expect(response.status).toBe(415);
  });
});

describe("what no honest client sends", () => {
  test("control characters in a header value are 400 BAD_HEADER and audited", async () => {
    const target = guardedApp();
    const response = await send(target, "/openapi.json", {
      headers: { "user-agent": "evil\u0001agent" },
    });
    expect(response.status).toBe(400);
    expect(await codeOf(response)).toBe("BAD_HEADER");
    target.services.audit.flush();
    const row = target.db.$client
      .query("SELECT detail FROM audit_events WHERE type = 'request.rejected'")
      .get() as { detail: string };
    expect(JSON.parse(row.detail)).toEqual({
      code: "BAD_HEADER",
      reason: "control characters in user-agent",
    });
  });

  test("a header's name is quoted back only when a plain word (probe 84f F2)", async () => {
    const target = guardedApp();
    const long = `x-${"a".repeat(12_000)}`;
    for (const [name, shown] of [
      ["x-trace", "x-trace"],
      [long, "a header"],
      ["x-!#$%&'*+.^_`|~", "a header"],
    ] as const) {
      const response = await send(target, "/openapi.json", {
        headers: { [name]: "evil\u007fvalue" },
      });
      expect(response.status).toBe(400);
      const body = (await response.json()) as { code: string; detail: string };
      expect(body).toMatchObject({
        code: "BAD_HEADER",
        detail: `Refused: control characters in ${shown}.`,
      });
    }
  });

  test.each([
    ["authorization", "Bearer a, Bearer b"],
    ["x-api-key", "pal_live_a, pal_live_b"],
    ["content-type", "application/json, text/plain"],
  ])("a repeated %s is 400 DUPLICATE_HEADER", async (name, value) => {
    const target = guardedApp();
    const response = await send(target, "/openapi.json", { headers: { [name]: value } });
    expect(response.status).toBe(400);
    expect(await codeOf(response)).toBe("DUPLICATE_HEADER");
  });

  test("over-long URLs and query strings are 414", async () => {
    const target = guardedApp();
    const longPath = await send(target, `/api/${"a".repeat(5000)}`);
    expect(longPath.status).toBe(414);
    expect(await codeOf(longPath)).toBe("URI_TOO_LONG");
    const longQuery = await send(target, `/openapi.json?q=${"b".repeat(3000)}`);
    expect(longQuery.status).toBe(414);
  });

  test.each([
    ["/api/..%2fetc/passwd"],
    ["/api/%2e%2e%2fetc"],
    ["/api/file%00.json"],
    ["/api/%252e%252e/secret"],
    ["/api/..%5cwindows"],
    ["/api/%2E%2E%2Fcase"],
  ])("the path %s is 400 BAD_PATH", async (path) => {
    const target = guardedApp();
    const response = await send(target, path);
    expect(response.status).toBe(400);
    expect(await codeOf(response)).toBe("BAD_PATH");
  });

  test("paths sent raw over a socket are checked as sent", async () => {
    const target = guardedApp();
    const running = serveInProcess(target);
    const raw = (path: string) =>
      new Promise<string>((resolve) => {
        let out = "";
        Bun.connect({
          hostname: "127.0.0.1",
          port: Number(running.url.port),
          socket: {
            open(socket) {
              socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
            },
            data(_socket, data) {
              out += data.toString();
            },
            close() {
              resolve(out.split("\r\n")[0] ?? "");
            },
            error() {
              resolve("error");
            },
          },
        });
      });
    try {
      expect(await raw("/api/..%2f..%2fetc/passwd")).toBe("HTTP/1.1 400 Bad Request");
      expect(await raw("/api/x%00y")).toBe("HTTP/1.1 400 Bad Request");
      // Plain dot segments are resolved by the server before routing: /api/../health is /health.
      expect(await raw("/api/../health")).toBe("HTTP/1.1 200 OK");
      // A fragment, which no client sends, anywhere in the target (probe 84f F3, F4).
      expect(await raw("/health#x")).toBe("HTTP/1.1 400 Bad Request");
      expect(await raw("/api/admin/audit?x=#&limit=+3")).toBe("HTTP/1.1 400 Bad Request");
    } finally {
      await running.shutdown("test");
    }
  });
});

describe("header bytes sent raw over a socket", () => {
  /** The status line and whether the answer carries a request id (Palisade's) or not (Bun's own). */
  const rawWithUserAgent = (port: number, userAgent: string) =>
    new Promise<{ status: string; palisade: boolean }>((resolve) => {
      let out = "";
      Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: {
          open(socket) {
            socket.write(
              Buffer.from(
                `GET /openapi.json HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ${userAgent}\r\nConnection: close\r\n\r\n`,
                "latin1",
              ),
            );
          },
          data(_socket, data) {
            out += data.toString("latin1");
          },
          close() {
            resolve({
              status: out.split("\r\n")[0] ?? "",
              palisade: /\r\nx-request-id: /i.test(out),
            });
          },
          error() {
            resolve({ status: "error", palisade: false });
          },
        },
      });
    });

  test("a C0 control in a header value is refused by Bun's parser (a bare 400, as README says), DEL by the guard (BAD_HEADER) (probe 84c F2)", async () => {
    const target = guardedApp();
    const running = serveInProcess(target);
    const port = Number(running.url.port);
    try {
      for (let byte = 0; byte < 0x20; byte++) {
        if (byte === 0x09 || byte === 0x0a || byte === 0x0d) continue;
        expect({
          byte,
          ...(await rawWithUserAgent(port, `a${String.fromCharCode(byte)}b`)),
        }).toEqual({
          byte,
          status: "HTTP/1.1 400 Bad Request",
          palisade: false,
        });
      }
      expect(await rawWithUserAgent(port, "a\u007fb")).toEqual({
        status: "HTTP/1.1 400 Bad Request",
        palisade: true,
      });
      expect(await rawWithUserAgent(port, "a\tb")).toEqual({
        status: "HTTP/1.1 200 OK",
        palisade: true,
      });
    } finally {
      await running.shutdown("test");
    }
  });
});

describe("injection", () => {
  const hostile = [
    "'; DROP TABLE users; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM audit_events; --",
    "\u0000\u001b[31m<script>alert(1)</script>",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a template injection attempt, as text.
    "💣 ${process.env} {{7*7}} %s%n",
  ];

  test("hostile strings are stored and read back unchanged, tables intact", () => {
    const target = guardedApp();
    const now = new Date();
    hostile.forEach((text, i) => {
      target.db
        .insert(users)
        .values({ id: `u${i}`, email: text, passwordHash: text, createdAt: now, updatedAt: now })
        .run();
      target.services.audit.record({
        type: "auth.login.failed",
        outcome: "failure",
        actor: text,
        detail: { note: text },
      });
    });
    const stored = target.db.select().from(users).all();
    expect(stored.map((u) => u.email)).toEqual(hostile);
    const audited = target.db.$client
      .query("SELECT actor, detail FROM audit_events ORDER BY id")
      .all() as { actor: string; detail: string }[];
    expect(audited.map((a) => a.actor)).toEqual(hostile);
    expect(audited.map((a) => JSON.parse(a.detail).note)).toEqual(hostile);
  });

  test("a SQL-looking chat message is not refused: there is no pattern blocking", async () => {
    const target = guardedApp();
    const response = await send(target, "/api/chat-echo", {
      body: { message: "How do I write SELECT * FROM users WHERE name = 'x' OR 1=1; --?" },
    });
    expect(response.status).toBe(200);
  });
});

describe("optional whitespace", () => {
  test("space and tab are cut from both ends, nothing else, whether or not a value has any", () => {
    const cases: Array<[string, string]> = [
      ["", ""],
      ["application/json", "application/json"],
      [" application/json", "application/json"],
      ["application/json\t", "application/json"],
      ["\t application/json \t", "application/json"],
      [" ", ""],
      ["\t \t", ""],
      ["a b", "a b"],
      ["\u00a0application/json", "\u00a0application/json"],
      ["application/json\u00a0", "application/json\u00a0"],
      [" \u00a0x\u00a0 ", "\u00a0x\u00a0"],
      ["\nx", "\nx"],
    ];
    for (const [text, trimmed] of cases) {
      expect({ text, got: trimOptionalWhitespace(text) }).toEqual({ text, got: trimmed });
    }
  });

  test("a long run of it inside a value is passed over once (an X-Forwarded-For entry of 16,000 spaces took 140 ms a request)", () => {
    const inside = " \t".repeat(500_000);
    expect(trimOptionalWhitespace(`a${inside}b `)).toBe(`a${inside}b`);
    expect(trimOptionalWhitespace(` 1.2.3.4${inside}x\t`)).toBe(`1.2.3.4${inside}x`);
    expect(parseForwardedEntry(`1.2.3.4${inside}x `)).toBeNull();
  });
});
