import { afterEach, describe, expect, test } from "bun:test";
import { createLogger, logSafe, REDACTED } from "../../src/logging/logger";
import { buildTestApp, LogCapture, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

describe("redaction", () => {
  test("credential headers and fields are redacted by name", () => {
    const logs = new LogCapture();
    const logger = createLogger({ level: "info", destination: logs });
    logger.info(
      {
        headers: { authorization: "Bearer abc.def.ghi", cookie: "palisade_session=s3cr3t" },
        body: { password: "correct horse battery", email: "a@b.test" },
        refreshToken: "rt_123456789",
      },
      "event",
    );
    const [entry] = logs.entries as [Record<string, Record<string, unknown>>];
    expect(entry.headers!.authorization).toBe(REDACTED);
    expect(entry.headers!.cookie).toBe(REDACTED);
    expect(entry.body!.password).toBe(REDACTED);
    expect(entry.body!.email).toBe("a@b.test");
    expect(entry.refreshToken as unknown).toBe(REDACTED);
    expect(logs.text).not.toContain("abc.def.ghi");
    expect(logs.text).not.toContain("s3cr3t");
    expect(logs.text).not.toContain("correct horse");
  });

  test("configured secret values are scrubbed wherever they appear", () => {
    const logs = new LogCapture();
    const secret = "whsec_0123456789abcdefghijklmnop";
    const quoted = 'sk"with\\quotes-0123456789';
    const logger = createLogger({
      level: "info",
      secretValues: [secret, quoted],
      destination: logs,
    });
    logger.error({ note: `upstream said ${secret}`, other: quoted }, `failed with ${secret}`);
    expect(logs.text).not.toContain(secret);
    expect(logs.text).not.toContain("with\\\\quotes");
    const [entry] = logs.entries;
    expect(entry!.msg).toBe(`failed with ${REDACTED}`);
    expect(entry!.other).toBe(REDACTED);
  });

  test("the access log never carries Authorization or cookie values", async () => {
    current = buildTestApp();
    await send(current, "/health", {
      headers: { authorization: "Bearer top-secret-token", cookie: "palisade_session=abc123xyz" },
    });
    expect(current.logs.text).not.toContain("top-secret-token");
    expect(current.logs.text).not.toContain("abc123xyz");
  });
});

describe("log injection", () => {
  test("logSafe escapes control characters and line separators and cuts long values", () => {
    expect(logSafe("a\r\nb")).toBe("a\\u000d\\u000ab");
    expect(logSafe("x\u2028y\u0000z\u001b[31m")).toBe("x\\u2028y\\u0000z\\u001b[31m");
    expect(logSafe("ok")).toBe("ok");
    expect(logSafe(null)).toBeUndefined();
    expect(logSafe("a".repeat(2000))!.length).toBe(513);
  });

  test("CR/LF in a path or user agent cannot forge a log line", async () => {
    current = buildTestApp();
    const forged = '{"level":"fatal","msg":"forged"}';
    await send(current, `/x%0d%0a${encodeURIComponent(forged)}`, {
      headers: { "user-agent": `agent\u001b[2K\t${forged}\u0085\u007f` },
    });
    const lines = current.logs.lines;
    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]!);
    expect(entry.msg).toBe("request");
    expect(entry.level).toBe("warn");
    expect(entry.userAgent).toContain("\\u001b[2K");
    expect(entry.userAgent).toContain("\\u0085\\u007f");
    expect(entry.path).toStartWith("/x%0d%0a");
    expect(lines.some((line) => line.startsWith('{"level":"fatal"'))).toBe(false);
  });

  test("the access line names the route pattern, status, duration and client", async () => {
    current = buildTestApp();
    await send(current, "/health", { peer: "203.0.113.9" });
    const entry = current.logs.entries.at(-1)!;
    expect(entry).toMatchObject({
      msg: "request",
      method: "GET",
      route: "/health",
      status: 200,
      clientIp: "203.0.113.9",
    });
    expect(entry.durationMs).toBeGreaterThanOrEqual(0);
    expect(entry.requestId).toBeString();
  });
});
