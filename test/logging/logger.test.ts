import { afterEach, describe, expect, test } from "bun:test";
import {
  createLogger,
  cutClientText,
  logSafe,
  REDACTED,
  secretScrubber,
} from "../../src/logging/logger";
import { buildTestApp, LogCapture, send, type TestApp } from "../support/app";
import { BASIC_CREDENTIAL, CREDENTIAL_QUERY, CREDENTIAL_VALUES } from "../support/credentials";

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

  test("no line carries a raw C1 control, line or paragraph separator or bidirectional control, whatever a field holds (probe 26f F5)", async () => {
    const logs = new LogCapture();
    const logger = createLogger({ level: "info", destination: logs });
    const reason = "abc\u202edef\u2028ghi\u0085jkl\u2066m\u200fn\u2029o";
    logger.warn({ reason }, `msg \u202e${reason}`);
    expect(logs.text).not.toMatch(
      /[\u0080-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/,
    );
    // The same JSON: a parser reads the text as it was given.
    const [entry] = logs.entries as [{ reason: string; msg: string }];
    expect(entry.reason).toBe(reason);
    expect(entry.msg).toBe(`msg \u202e${reason}`);
    // And through the app: a block's reason an admin gives reaches the "ip blocked" line escaped.
    current = buildTestApp();
    current.services.ipBlocks.block({
      address: "203.0.113.9",
      reason,
      ttlMs: 60_000,
      source: "admin",
    });
    expect(current.logs.entries.some((line) => line.msg === "ip blocked")).toBe(true);
    expect(current.logs.text).not.toMatch(/[\u0080-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/);
    expect(logSafe("a\u202eb\u2066c")).toBe("a\\u202eb\\u2066c");
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

/** A base64 secret, as `openssl rand -base64 32` makes them: `+`, `/` and `=` are URL-encoded. */
const B64_SECRET = "Zm9v+YmFy/YmF6PT0rLy8xMjM0NTY3ODkw+YWJj/ZGVm==";
const API_KEY = "pal_live_SECRETPALKEY1234567890abcd";
const JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTRUNSRVRKV1QifQ.c2lnbmF0dXJlU0VDUkVU";

/** Every spelling a configured secret can take in a URL, a header or a JSON string. */
function spellings(secret: string): string[] {
  const encoded = encodeURIComponent(secret);
  return [
    secret,
    encoded,
    encoded.replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()),
    encoded.replace(/%20/g, "+"),
    secret.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
    // Half-encoded: only the characters a path cannot carry.
    secret.replace(/\+/g, "%2B"),
  ];
}

/** What must not survive of a secret: any 9 characters of it (so no prefix of a cut one). */
function fragments(secret: string): string[] {
  return [secret.slice(0, 9), secret.slice(-9)];
}

describe("one scrubber, every spelling", () => {
  test("configured values in every spelling, API keys, JWTs, bearer credentials and credential parameters never reach a line", () => {
    const logs = new LogCapture();
    const logger = createLogger({ level: "info", secretValues: [B64_SECRET], destination: logs });
    for (const spelling of spellings(B64_SECRET)) logger.error({ url: `/x/${spelling}` }, spelling);
    logger.warn(`key ${API_KEY} and token ${JWT}`);
    logger.warn(`upstream GET /cb?${CREDENTIAL_QUERY}`);
    logger.warn({ header: BASIC_CREDENTIAL, auth: "Bearer HEADERBEARER42" }, "headers");
    // Ordinary words that merely contain the shapes are left alone.
    logger.info({ principal_id: "user:1" }, "basic auth is refused; keyword=search");
    const text = logs.text;
    for (const secret of [B64_SECRET, API_KEY, JWT]) {
      for (const fragment of fragments(secret)) expect(text).not.toContain(fragment);
    }
    for (const value of [...CREDENTIAL_VALUES, "HEADERBEARER42"]) {
      expect(text).not.toContain(value);
    }
    expect(text).toContain("principal_id");
    expect(text).toContain("basic auth is refused");
  });

  test("logSafe scrubs the whole value before cutting it, so a secret across the cut leaves nothing", () => {
    const scrub = (text: string) => text.replaceAll(B64_SECRET, REDACTED);
    const value = `${"A".repeat(500)}${B64_SECRET}`;
    expect(logSafe(value)).toContain(B64_SECRET.slice(0, 9));
    const safe = logSafe(value, scrub)!;
    expect(safe).toBe(`${"A".repeat(500)}${REDACTED}`);
  });

  test("paths, user agents and request ids: no key, JWT or configured secret in any spelling, cut or not, reaches the access log", async () => {
    const idShaped = "sk_test_IDSHAPEDSECRET0123456789";
    current = buildTestApp({ env: { OPENAI_API_KEY: B64_SECRET, STRIPE_SECRET_KEY: idShaped } });
    expect(current.config.secretValues).toContain(idShaped);
    const paths = [
      `/x/${API_KEY}`,
      `/x/${JWT}`,
      ...spellings(B64_SECRET).map((spelling) => `/x/${spelling}`),
      // Straddling the 512-character cut of a logged value, raw and encoded.
      `/${"A".repeat(500)}${B64_SECRET}`,
      `/${"A".repeat(505)}${encodeURIComponent(B64_SECRET)}`,
      `/${"A".repeat(500)}${API_KEY}`,
      `/${"A".repeat(490)}${JWT}`,
    ];
    // 404, or 400 where the request guard refuses an encoded path: logged either way.
    for (const path of paths) expect((await send(current, path)).status).toBeOneOf([400, 404]);
    for (const agent of [
      `client ${API_KEY}`,
      `client ${JWT}`,
      `client ${B64_SECRET}`,
      `${"A".repeat(505)}${B64_SECRET}`,
    ]) {
      await send(current, "/nothing", { headers: { "user-agent": agent } });
    }
    // Safe characters, short enough, but key-, JWT- or secret-shaped: replaced, never logged.
    const ids = ["pal_live_IDKEY0123456789", JWT.slice(0, 60), idShaped];
    for (const id of ids) {
      const response = await send(current, "/health", { headers: { "x-request-id": id } });
      expect(response.headers.get("x-request-id")).not.toBe(id);
    }
    const text = current.logs.text;
    for (const secret of [B64_SECRET, API_KEY, JWT, "pal_live_IDKEY0123456789", idShaped]) {
      for (const fragment of fragments(secret)) expect(text).not.toContain(fragment);
    }
    for (const spelling of spellings(B64_SECRET)) expect(text).not.toContain(spelling);
    // The lines are still there, with what is not secret.
    const unmatched = current.logs.entries.filter((entry) => entry.route === "<unmatched>");
    expect(unmatched.length).toBe(paths.length + 4);
    expect(unmatched[0]!.path).toBe(`/x/${REDACTED}`);
  });
});

describe("the percent-encoded patterns are built at first use", () => {
  test("each scrubber matches only its own secrets, half-encoded, whichever is used first", () => {
    const first = "Zm9v+first+secret/0123456789==";
    const second = "YmFy+second+secret/9876543210==";
    const scrubFirst = secretScrubber([first]);
    const scrubSecond = secretScrubber([second]);
    const halfEncoded = (secret: string) => secret.replace(/\+/g, "%2B");
    expect(scrubSecond(`/x/${halfEncoded(second)}`)).toBe(`/x/${REDACTED}`);
    expect(scrubSecond(`/x/${halfEncoded(first)}`)).toBe(`/x/${halfEncoded(first)}`);
    expect(scrubFirst(`/x/${halfEncoded(first)}`)).toBe(`/x/${REDACTED}`);
    expect(scrubFirst(`/x/${halfEncoded(second)}`)).toBe(`/x/${halfEncoded(second)}`);
    // Still there on later lines, in lower-case hex too.
    expect(scrubFirst(`again ${first.replace("+", "%2b")}`)).toBe(`again ${REDACTED}`);
  });
});

describe("the upstreams' key shapes a client may paste anywhere (probe 30b F4)", () => {
  const keys = [
    "sk_live_51HxFAKEstripeKEY0123456789abcdef",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "rk_live_51HxRESTRICTEDkey0123456789",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "sk-AbCdEfGhIjKlMnOpQrStUvWxYz012345",
  ];

  test("each is redacted from a path, an agent and a message, and refused as a request id", async () => {
    current = buildTestApp();
    for (const key of keys) {
      const response = await send(current, `/nope/${key}`, {
        headers: { "user-agent": `client (${key})`, "x-request-id": key },
      });
      expect(response.headers.get("x-request-id")).not.toBe(key);
      current.logger.warn({ note: `upstream rejected ${key}` }, `paid with ${key}`);
    }
    for (const key of keys) expect(current.logs.text).not.toContain(key.slice(8));
  });

  test("words that only look alike are left alone", () => {
    const scrub = secretScrubber([]);
    for (const text of [
      "risk_live_data",
      "task-AbCdEfGhIjKlMnOpQrStUvWxYz012345",
      "sk-short",
      "disk_test_x",
      "risk_live_monitoring",
      "/webhooks/whsec_/z",
      "/docs/whsec_rotation/how-to",
      "/api/whsec_x/conversations/0190abcd-1234",
      "desk_live_configurationmanagement",
    ]) {
      expect(scrub(text)).toBe(text);
    }
  });

  test("a Stripe key glued after other text is found, and a signing secret in a path takes no more than its run (probe 30c F5)", () => {
    const scrub = secretScrubber([]);
    expect(scrub("tokensk_live_51HxFAKEstripeKEY0123456789")).toBe(`token${REDACTED}`);
    expect(scrub("x_rk_test_51HxRESTRICTEDkey012345")).toBe(`x_${REDACTED}`);
    expect(scrub("/hooks/whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw?x=1")).toBe(
      `/hooks/${REDACTED}?x=1`,
    );
  });
});

test("client text is cut between characters: an emoji at the 512th unit goes whole, never half", () => {
  for (const before of [510, 511, 512]) {
    const cut = cutClientText(`${"a".repeat(before)}\u{1F600}${"b".repeat(10)}`);
    expect(cut.isWellFormed()).toBe(true);
    expect(cut.endsWith("…")).toBe(true);
    expect(cut.length).toBeLessThanOrEqual(513);
  }
  expect(cutClientText(`${"a".repeat(510)}\u{1F600}b`)).toBe(`${"a".repeat(510)}\u{1F600}…`);
});
