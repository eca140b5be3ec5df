/**
 * A credential parameter's value in text that came from a URL is delimited in the raw text: an
 * encoded `&`, `#` or line break belongs to the value (it is what Python's quote_plus, Go or a
 * browser writes for a password holding one), so the value is redacted whole whatever it decodes
 * to. Over the app (the access line's `path` of an unrouted request) and in Sentry's scrubber.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { REDACTED } from "../../src/logging/logger";
import { createScrubber, FILTERED } from "../../src/plugins/sentry/scrub";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** Every value holds TAIL after what a decoder would read as a delimiter or a special character. */
const VALUES = [
  "v%26TAIL",
  "v%26MOREX%20TAIL",
  "a%20b%22c%5C%5Cd%23TAIL",
  "abc%09def%0ATAIL",
  "abc%0d%0aTAIL",
  "p%40ss%26WRDX%2BTAIL",
  "two+words%26TAIL",
  "%27quoted%27%26TAIL",
  "back%5Cslash%23frag%26TAIL",
];
const NAMES = ["password", "token", "api_key", "client_secret", "pwd"];

function pathLogged(app: TestApp, requestId: string): unknown {
  const entry = app.logs.entries.find(
    (line) => line.msg === "request" && line.requestId === requestId,
  );
  expect(entry).toBeDefined();
  return entry!.path;
}

let peers = 0;

async function logPath(app: TestApp, path: string, requestId: string): Promise<unknown> {
  // A peer each, so the limiter never answers (429) before the path is logged.
  const peer = `10.77.${Math.floor(peers / 250)}.${(peers++ % 250) + 1}`;
  const response = await send(app, path, { headers: { "x-request-id": requestId }, peer });
  // No such route; the request guard refuses some encodings (400) first. Both log the path.
  expect([400, 404]).toContain(response.status);
  return pathLogged(app, requestId);
}

describe("access line: a credential parameter's value is redacted to its raw end", () => {
  test("encoded &, #, CR, LF, space, +, quotes and backslashes inside the value leave nothing", async () => {
    current = buildTestApp();
    let n = 0;
    for (const name of NAMES) {
      for (const value of VALUES) {
        const id = `req-url-${n++}`;
        expect(await logPath(current, `/x/${name}=${value}`, id)).toBe(`/x/${name}=${REDACTED}`);
      }
    }
    expect(current.logs.text).not.toContain("TAIL");
    expect(current.logs.text).not.toContain("MOREX");
    expect(current.logs.text).not.toContain("WRDX");
  });

  test("a raw & still ends the value: the next parameter is logged as sent", async () => {
    current = buildTestApp();
    expect(await logPath(current, "/x/password=v%26TAIL&next=kept%20here", "req-raw-amp")).toBe(
      `/x/password=${REDACTED}&next=kept%20here`,
    );
  });

  test("a name only decoding reveals is still found, and its value redacted to its raw end", async () => {
    current = buildTestApp();
    expect(await logPath(current, "/x/pass%77ord=abc%26TAIL", "req-enc-name")).toBe(
      `/x/password=${REDACTED}`,
    );
    expect(await logPath(current, "/x/tok%65n=a+b%23TAIL", "req-enc-name-plus")).toBe(
      `/x/token=${REDACTED}`,
    );
    // A name after an encoded `&` (a value that holds `&token=`) is a credential parameter too.
    expect(await logPath(current, "/x/a%26token=TAILSECRET", "req-after-amp")).toBe(
      `/x/a%26token=${REDACTED}`,
    );
    expect(current.logs.text).not.toContain("TAIL");
  });

  test("common spellings of credential names are recognised; ordinary names are not", async () => {
    current = buildTestApp();
    const credentials = [
      "pwd",
      "user_pwd",
      "passwd",
      "pass",
      "passphrase",
      "pw",
      "auth",
      "credential",
      "credentials",
      "creds",
      "private_key",
      "client_secret",
      "access_key",
      "sig",
      "jwt",
    ];
    for (const [i, name] of credentials.entries()) {
      expect(await logPath(current, `/nope/${name}=HUNTER4val`, `req-name-${i}`)).toBe(
        `/nope/${name}=${REDACTED}`,
      );
    }
    expect(current.logs.text).not.toContain("HUNTER4");
    const ordinary = [
      "/nope/q=shoes%26socks",
      "/nope/page=2",
      "/nope/upward=1",
      "/nope/powder=blue",
    ];
    for (const [i, path] of ordinary.entries()) {
      expect(await logPath(current, path, `req-plain-${i}`)).toBe(path);
    }
  });
});

describe("Sentry: a credential parameter's value is filtered to its raw end", () => {
  test("in the message, exception values, breadcrumbs, extra and tags", () => {
    const scrub = createScrubber([]);
    const texts = [
      "https://x/api?token=abc%26TAILSECRET",
      "client_secret=p%40ss%26TAILword",
      "password=a%20b%22c%5C%5Cd%23TAIL",
      "api_key=abc%0ATAIL%0D",
      "pwd=two+words%26TAIL",
    ];
    const expected = [
      `https://x/api?token=${FILTERED}`,
      `client_secret=${FILTERED}`,
      `password=${FILTERED}`,
      `api_key=${FILTERED}`,
      `pwd=${FILTERED}`,
    ];
    for (const [i, text] of texts.entries()) {
      const event = scrub({
        message: `failed ${text}`,
        exception: { values: [{ type: "Error", value: text }] },
        breadcrumbs: [{ message: text }],
        extra: { upstream: text },
        tags: { url: text },
      });
      expect(event.message).toBe(`failed ${expected[i]}`);
      expect(event.exception.values[0]!.value).toBe(expected[i]!);
      expect(event.breadcrumbs[0]!.message).toBe(expected[i]!);
      expect(event.extra.upstream).toBe(expected[i]!);
      expect(event.tags.url).toBe(expected[i]!);
      expect(JSON.stringify(event)).not.toContain("TAIL");
    }
  });

  test("a raw & ends the value; text without a credential is left as it was", () => {
    const scrub = createScrubber([]);
    const event = scrub({
      message: "GET /cb?code=x%26TAIL&state=abc%20def",
      extra: { plain: "/search?q=a%26b%23c" },
    });
    expect(event.message).toBe(`GET /cb?code=${FILTERED}&state=abc%20def`);
    expect(event.extra.plain).toBe("/search?q=a%26b%23c");
  });
});
