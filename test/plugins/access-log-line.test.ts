/**
 * The access line is built as one string: it must be, byte for byte, the JSON of the fields in
 * their order (absent ones left out), with every client-sent value escaped.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { PIPE_BUF } from "../../src/logging/line-buffer";
import { cutLogged } from "../../src/plugins/access-log";
import {
  type AccessLineFields,
  createAccessLine,
  ESCAPED_CACHE_LIMIT,
  isoTimeCache,
  memoizeText,
  USER_AGENT_CACHE_LIMIT,
} from "../../src/plugins/access-log/line";
import { buildTestApp, send, type TestApp } from "../support/app";

const base: AccessLineFields = {
  level: "info",
  time: "2026-01-02T03:04:05.678Z",
  service: "palisade",
  requestId: "01a2247c-ba01-7037-b7ac-4098284601e4",
  method: "GET",
  route: "/api/chat/conversations/:id",
  path: undefined,
  status: 200,
  durationMs: 1.234,
  clientIp: "2001:db8::1",
  userAgent: "curl/8.5.0",
};

const HOSTILE = [
  'a "quoted" \\ backslash',
  "line\nbreak\r\nand\ttab",
  "\u0000\u001f\u007f\u2028\u2029",
  '","msg":"forged","x":"',
  "\ud800 lone surrogate \udfff",
  "ünïcødé ✓ 🚀",
  "",
];

describe("accessLine", () => {
  const accessLine = createAccessLine();
  test.each([
    ["every field", {}],
    ["no path, no user agent", { path: undefined, userAgent: undefined }],
    ["a path and no user agent", { path: "/x", userAgent: undefined }],
    ["a 500 with a slow duration", { level: "error", status: 500, durationMs: 12345.678 }],
    ["a zero duration", { durationMs: 0 }],
    ["durations JSON cannot write", { durationMs: Number.NaN, status: Number.POSITIVE_INFINITY }],
  ])("%s: the JSON of the fields", (_label, overrides) => {
    const fields = { ...base, ...overrides } as AccessLineFields;
    expect(accessLine(fields)).toBe(`${JSON.stringify({ ...fields, msg: "request" })}\n`);
  });

  test.each(HOSTILE)("client text %j stays escaped, one line that parses back", (value) => {
    const fields = { ...base, path: value, userAgent: value, method: value };
    const line = accessLine(fields);
    expect(line).toBe(`${JSON.stringify({ ...fields, msg: "request" })}\n`);
    expect(line.indexOf("\n")).toBe(line.length - 1);
    expect(JSON.parse(line)).toEqual({ ...fields, msg: "request" });
  });
});

describe("the escaped values a builder keeps", () => {
  test("each value gets its own escaping, in any order, field by field", () => {
    const accessLine = createAccessLine();
    const variants: Partial<AccessLineFields>[] = [];
    for (const value of [...HOSTILE, "127.0.0.1", "::1", "/a", "/b"]) {
      variants.push({ route: value }, { clientIp: value }, { userAgent: value }, { time: value });
      variants.push({ level: value }, { service: value }, { method: value });
    }
    for (let round = 0; round < 3; round++) {
      const order = round === 1 ? [...variants].reverse() : variants;
      for (const overrides of order) {
        const fields = { ...base, ...overrides };
        expect(accessLine(fields)).toBe(`${JSON.stringify({ ...fields, msg: "request" })}\n`);
      }
    }
  });

  test("a flood of distinct routes, addresses and user agents keeps each cache bounded", () => {
    const accessLine = createAccessLine(40);
    for (let i = 0; i < 2_000; i++) {
      const fields = { ...base, route: `/r${i}`, clientIp: `10.0.${i >> 8}.${i & 255}` };
      const withAgent = { ...fields, userAgent: `agent ${i}` };
      expect(accessLine(withAgent)).toBe(`${JSON.stringify({ ...withAgent, msg: "request" })}\n`);
      const { route, clientIp, userAgent } = accessLine.sizes;
      expect(Math.max(route, clientIp, userAgent)).toBeLessThanOrEqual(40);
    }
    expect(accessLine(base)).toBe(`${JSON.stringify({ ...base, msg: "request" })}\n`);
    expect(ESCAPED_CACHE_LIMIT).toBeGreaterThan(0);
  });
});

describe("isoTimeCache", () => {
  test("the same text as toISOString, formatted anew when the millisecond changes", () => {
    let now = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    const time = isoTimeCache(() => now);
    expect(time()).toBe(new Date(now).toISOString());
    expect(time()).toBe("2026-01-02T03:04:05.678Z");
    now += 1;
    expect(time()).toBe("2026-01-02T03:04:05.679Z");
    now += 86_400_000;
    expect(time()).toBe(new Date(now).toISOString());
    expect(isoTimeCache()()).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });
});

describe("through the app", () => {
  let current: TestApp | null = null;
  afterEach(() => {
    current?.close();
    current = null;
  });

  test("a method outside the usual set and the user agent are logged as sent, escaped", async () => {
    current = buildTestApp();
    // Bun's parser admits only known methods (a Request made with any other is a GET).
    await send(current, "/nothing", { method: "PROPFIND" });
    await send(current, "/nothing", { method: "PATCH", headers: { "user-agent": 'a"b\\c' } });
    const lines = current.logs.entries.filter((entry) => entry.msg === "request");
    expect(lines.at(-2)).toMatchObject({ method: "PROPFIND", route: "<unmatched>", status: 404 });
    expect(lines.at(-1)).toMatchObject({ method: "PATCH", userAgent: 'a"b\\c', status: 404 });
  });

  test("a client cannot make its access line longer than PIPE_BUF: escaping grows values, the line is rebuilt shorter", async () => {
    current = buildTestApp();
    const userAgent = `a${"\t".repeat(600)}b`;
    const path = `/x${"%01".repeat(600)}`;
    await send(current, path, { headers: { "user-agent": userAgent } });
    await send(current, "/y", { headers: { "user-agent": `c${"\t".repeat(100)}d` } });
    const [long, short] = current.logs.lines.filter((line) => line.includes('"msg":"request"'));
    // Cut at 512 characters, then escaped: this line would be ~8 KB.
    expect(Buffer.byteLength(long!)).toBeLessThanOrEqual(PIPE_BUF);
    const entry = JSON.parse(long!);
    expect(entry).toMatchObject({ status: 404, route: "<unmatched>" });
    expect(entry.userAgent).toBe(`a${"\\u0009".repeat(21)}…`);
    expect(entry.path).toBe(`/x${"%01".repeat(42)}…`);
    // A line within the bound keeps its values as logSafe gives them.
    expect(JSON.parse(short!).userAgent).toBe(`c${"\\u0009".repeat(100)}d`);
  });
});

describe("cutLogged", () => {
  test("cuts at the limit, never inside an escape, and marks the cut", () => {
    expect(cutLogged(undefined)).toBeUndefined();
    expect(cutLogged("short", 10)).toBe("short");
    expect(cutLogged("abcdefghij", 4)).toBe("abcd…");
    // The limit falls inside the second escape (characters 7–12): cut before it.
    expect(cutLogged("a\\u0009\\u0009z", 9)).toBe("a\\u0009…");
    expect(cutLogged("a\\u0009\\u0009z", 13)).toBe("a\\u0009\\u0009…");
  });
});

describe("memoizeText", () => {
  test("each text gets its own answer, asked in any order; a secret stays redacted when cached", () => {
    let computed = 0;
    const safe = memoizeText((text) => {
      computed++;
      return text.replaceAll("SECRET", "[REDACTED]");
    });
    expect(safe(null)).toBeUndefined();
    for (let round = 0; round < 3; round++) {
      expect(safe("agent SECRET")).toBe("agent [REDACTED]");
      expect(safe("agent")).toBe("agent");
      expect(safe("Agent")).toBe("Agent");
      expect(safe("")).toBe("");
    }
    expect(computed).toBe(4);
  });

  test("a flood of distinct texts keeps it bounded, and answers stay right after", () => {
    const safe = memoizeText((text) => `<${text}>`, 50);
    expect(safe("first")).toBe("<first>");
    for (let i = 0; i < 5_000; i++) {
      expect(safe(`agent ${i}`)).toBe(`<agent ${i}>`);
      expect(safe.size).toBeLessThanOrEqual(50);
    }
    expect(safe("first")).toBe("<first>");
    expect(USER_AGENT_CACHE_LIMIT).toBeGreaterThan(0);
  });
});
