/**
 * A configured secret holding every printable ASCII character, spelled as each common URL
 * encoder writes it (and in any mix), must never reach a log line: through the logger (the
 * whole JSON line is scrubbed) and through the access log (client values are scrubbed raw).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createLogger, REDACTED } from "../../src/logging/logger";
import { createTextScrubber, scrubAnySpelling } from "../../src/logging/scrub";
import { buildTestApp, LogCapture, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const PRINTABLE = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)).join(
  "",
);
/** Every printable ASCII character between two markers no spelling changes. */
const SECRET = `JwtSecretValue_Zq8x${PRINTABLE}endJWT`;
/** The probe's secret: Python's quote_plus of it was logged verbatim. */
const PROBE_SECRET = 'JwtSecretValue_Zq8x!"\\ 7mKp/+ab=cd%41endJWT';

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const hex = (char: string) => `%${char.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`;

/** An encoder that leaves `raw` alone, percent-encodes the rest, and writes a space as `space`. */
function encoder(raw: string, space: "%20" | "+") {
  return (text: string) =>
    [...text]
      .map((char) => (char === " " ? space : raw.includes(char) ? char : hex(char)))
      .join("");
}

/** What each encoder leaves raw (checked against Python 3 and Go's net/url sources). */
const ENCODERS: Record<string, (text: string) => string> = {
  encodeURIComponent: (text) => encodeURIComponent(text),
  "Python quote (safe='/')": encoder(`${ALNUM}_.-~/`, "%20"),
  "Python quote_plus": encoder(`${ALNUM}_.-~`, "+"),
  "Go url.QueryEscape": encoder(`${ALNUM}-_.~`, "+"),
  "Go url.PathEscape": encoder(`${ALNUM}-_.~$&+:=@`, "%20"),
  "application/x-www-form-urlencoded (browsers)": (text) =>
    new URLSearchParams({ v: text }).toString().slice(2),
  "RFC 3986 unreserved only": encoder(`${ALNUM}-._~`, "%20"),
};

/** A deterministic mix: each character raw, upper-hex, lower-hex or (a space) `+` in turn. */
function mixed(text: string): string {
  return [...text]
    .map((char, i) => {
      const choice = i % 4;
      if (char === " ") return choice % 2 === 0 ? "+" : "%20";
      if (choice === 1) return hex(char);
      if (choice === 2) return hex(char).toLowerCase();
      // A raw `%` or `+` would read as an encoding or a space: an encoder never leaves them raw.
      return char === "%" || char === "+" ? hex(char) : char;
    })
    .join("");
}

/** Every spelling under test, with its name: each encoder in upper- and lower-case hex, and mixes. */
function spellingsOf(secret: string): [string, string][] {
  const out: [string, string][] = [];
  for (const [name, encode] of Object.entries(ENCODERS)) {
    const encoded = encode(secret);
    out.push([name, encoded]);
    out.push([`${name}, lower-case hex`, encoded.replace(/%[0-9A-F]{2}/g, (h) => h.toLowerCase())]);
  }
  out.push(["a mix of raw, %XX, %xx and +", mixed(secret)]);
  out.push(["the mix shifted by one", `${mixed(`_${secret}`).slice(1)}`]);
  return out;
}

function expectNoTrace(text: string) {
  for (const fragment of ["Zq8x", "endJWT", "JwtSecretValue"]) expect(text).not.toContain(fragment);
}

describe("a secret in every encoder's spelling", () => {
  test("the encoders under test really differ (the table is not one spelling seven times)", () => {
    const encoded = new Set(Object.values(ENCODERS).map((encode) => encode(SECRET)));
    // Python's quote_plus and Go's QueryEscape agree; every other pair differs.
    expect(encoded.size).toBe(Object.keys(ENCODERS).length - 1);
    // Python's quote_plus of the probe's secret, as the probe sent it.
    expect(ENCODERS["Python quote_plus"]!(PROBE_SECRET)).toBe(
      "JwtSecretValue_Zq8x%21%22%5C+7mKp%2F%2Bab%3Dcd%2541endJWT",
    );
  });

  for (const secret of [SECRET, PROBE_SECRET]) {
    test(`logger lines: every spelling is replaced whole (${secret.length} characters)`, () => {
      const logs = new LogCapture();
      const logger = createLogger({ level: "info", secretValues: [secret], destination: logs });
      const spellings = spellingsOf(secret);
      for (const [, spelling] of spellings) {
        logger.warn({ userAgent: `client ${spelling} tail` }, `seen /x/${spelling}`);
      }
      expectNoTrace(logs.text);
      expect(logs.entries).toHaveLength(spellings.length);
      for (const entry of logs.entries) {
        expect(entry.userAgent).toBe(`client ${REDACTED} tail`);
        expect(entry.msg).toBe(`seen /x/${REDACTED}`);
      }
    });
  }

  test("access log: user agents and paths in every spelling leave nothing of the secret", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: PROBE_SECRET } });
    expect(current.config.secretValues).toContain(PROBE_SECRET);
    const spellings = [...spellingsOf(PROBE_SECRET), ...spellingsOf(SECRET)];
    for (const [, spelling] of spellings) {
      await send(current, "/nothing", { headers: { "user-agent": `ua ${spelling} tail` } });
    }
    const agents = current.logs.entries
      .filter((entry) => entry.msg === "request")
      .map((entry) => entry.userAgent);
    expect(agents).toHaveLength(spellings.length);
    // The probe's secret is configured; the every-character one is not, so it must survive.
    const configured = agents.slice(0, spellingsOf(PROBE_SECRET).length);
    for (const agent of configured) expect(agent).toBe(`ua ${REDACTED} tail`);
    expect(agents.at(-1)).not.toContain(REDACTED);
    expectNoTrace(JSON.stringify(configured));
  });

  test("access log: a secret with every printable character, in each spelling of a path or agent", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: SECRET } });
    expect(current.config.secretValues).toContain(SECRET);
    for (const [, spelling] of spellingsOf(SECRET)) {
      await send(current, "/nothing", { headers: { "user-agent": `ua ${spelling}` } });
      // `#` and `?` cannot be raw in a path; every encoder encodes them.
      if (!/[#?]/.test(spelling)) await send(current, `/x/${spelling}`);
    }
    expectNoTrace(current.logs.text);
    expect(current.logs.entries.length).toBeGreaterThan(spellingsOf(SECRET).length);
  });
});

describe("a secret encoded as base64 or base64url (probe 14b F6)", () => {
  /** The secret inside a larger encoded value, at each of the three byte alignments. */
  const encodings = (secret: string) =>
    ["", "a", "ab", "user:", `{"k":"`].flatMap((before) => {
      const base64 = Buffer.from(`${before}${secret}"tail`).toString("base64");
      return [base64, base64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")];
    });

  test("in a path, a user agent and a log message: nothing the secret's bytes decide is left", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: SECRET } });
    const own = Buffer.from(SECRET).toString("base64");
    for (const encoded of encodings(SECRET)) {
      await send(current, `/x/${encodeURIComponent(encoded)}`, {
        headers: { "user-agent": `ua ${encoded}` },
      });
      current.logger.info(`seen ${encoded}`);
    }
    const text = current.logs.text;
    // The middle of the encoding at each alignment: characters that only the secret decides.
    for (let before = 0; before < 3; before++) {
      const shifted = Buffer.concat([Buffer.alloc(before), Buffer.from(SECRET)]).toString("base64");
      const middle = shifted.slice(8, -8);
      expect(text).not.toContain(middle);
      expect(text).not.toContain(middle.replace(/\+/g, "-").replace(/\//g, "_"));
    }
    expect(text).not.toContain(own.slice(4, -4));
    expect(text.split(REDACTED).length - 1).toBeGreaterThanOrEqual(encodings(SECRET).length * 2);
  });

  test("base64 whose + and / were then percent-encoded (either hex case), in an agent and a path, once or twice", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: SECRET } });
    const standard = encodings(SECRET).filter((_, i) => i % 2 === 0);
    expect(standard.some((form) => /[+/]/.test(form))).toBe(true);
    for (const encoded of standard) {
      const upper = encodeURIComponent(encoded);
      const lower = upper.replace(/%2[BF]/g, (hex) => hex.toLowerCase());
      await send(current, "/nothing", { headers: { "user-agent": `ua ${upper} ${lower}` } });
      await send(current, `/x/${encodeURIComponent(upper)}`);
    }
    const text = current.logs.text;
    for (let before = 0; before < 3; before++) {
      const shifted = Buffer.concat([Buffer.alloc(before), Buffer.from(SECRET)]).toString("base64");
      const middle = shifted.slice(8, -8);
      for (const spelling of [middle, encodeURIComponent(middle)]) {
        expect(text).not.toContain(spelling);
        expect(text.toLowerCase()).not.toContain(spelling.toLowerCase());
      }
    }
  });
});

describe("a secret percent-encoded more than once (probe 14e F2)", () => {
  test("twice in an agent and three times in a path: nothing of it is logged", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: PROBE_SECRET } });
    const twice = encodeURIComponent(encodeURIComponent(PROBE_SECRET));
    const thrice = encodeURIComponent(twice);
    await send(current, "/nothing", { headers: { "user-agent": `ua ${twice} tail` } });
    await send(current, `/x/${thrice}`);
    const text = current.logs.text;
    expectNoTrace(text);
    for (const spelling of [twice, thrice, encodeURIComponent(PROBE_SECRET)]) {
      expect(text).not.toContain(spelling);
    }
    const agent = current.logs.entries.find((entry) => entry.msg === "request")?.userAgent;
    expect(agent).toBe(`ua ${REDACTED} tail`);
  });

  test("a credential shape glued to a secret still encoded does not take part of it (probe 14g G1)", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: PROBE_SECRET } });
    const twice = encodeURIComponent(encodeURIComponent(PROBE_SECRET));
    const jwtShape = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.";
    for (const glued of [`pal_live_${twice}`, `${jwtShape}${twice}`]) {
      await send(current, "/nothing", { headers: { "user-agent": `ua ${glued} tail` } });
      await send(current, `/x/${encodeURIComponent(glued)}`);
    }
    const text = current.logs.text;
    expectNoTrace(text);
    // Not even the part after the secret's alphanumeric start.
    expect(text).not.toContain("7mKp");
  });

  test("base64 of a secret percent-encoded four times in an agent (probe 14g G2)", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: SECRET } });
    const base64 = Buffer.from(SECRET).toString("base64");
    let encoded = [...base64].map(hex).join("");
    for (let round = 0; round < 3; round++) encoded = encodeURIComponent(encoded);
    await send(current, "/nothing", { headers: { "user-agent": `ua ${encoded} tail` } });
    const agent = current.logs.entries.find((entry) => entry.msg === "request")?.userAgent;
    expect(agent).toContain(REDACTED);
    expect(String(agent)).not.toContain(base64.slice(8, 40));
  });

  test("a credential found in one decoding does not end the search of the next (probe 14f F1)", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: PROBE_SECRET } });
    let encoded = PROBE_SECRET;
    for (let round = 0; round < 4; round++) encoded = encodeURIComponent(encoded);
    await send(current, "/nothing", {
      headers: { "user-agent": `ua pal%5Flive%5Fx ${encoded} tail token%3Dabc` },
    });
    const text = current.logs.text;
    expectNoTrace(text);
    let spelling = PROBE_SECRET;
    for (let round = 0; round < 4; round++) {
      spelling = encodeURIComponent(spelling);
      expect(text).not.toContain(spelling);
    }
  });

  test("base64 whose + a form decoder read as a space", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: SECRET } });
    const base64 = Buffer.from(SECRET).toString("base64");
    const middle = base64.slice(8, -8);
    expect(middle).toContain("+");
    await send(current, "/nothing", {
      headers: { "user-agent": `ua ${base64.replace(/\+/g, " ")} tail` },
    });
    expect(current.logs.text).not.toContain(middle.replace(/\+/g, " "));
    expect(current.logs.text).toContain(REDACTED);
  });
});

describe("probe 14h", () => {
  const full = (text: string) =>
    [...Buffer.from(text)]
      .map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, "0")}`)
      .join("");

  test("a stray invalid escape beside an encoded secret does not keep it encoded (H1)", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: PROBE_SECRET } });
    const twice = full(full(PROBE_SECRET));
    await send(current, "/nothing", { headers: { "user-agent": `${twice}%FF` } });
    await send(current, "/nothing", { headers: { "user-agent": `x %FF${twice} y` } });
    await send(current, `/zz/${twice}%FF`);
    const text = current.logs.text;
    expectNoTrace(text);
    // Neither as sent nor decoded once.
    expect(text).not.toContain(twice.slice(0, 60));
    expect(text).not.toContain(full(PROBE_SECRET).slice(0, 30));
    expect(text.split(REDACTED).length - 1).toBeGreaterThanOrEqual(3);
  });

  test("beside an encoded secret, UTF-8 at the edges of RFC 3629's table is decoded and what is outside it kept as sent (probe 77b F2)", () => {
    const secret = "Sup3rS3cr3tValue-abcdefghijkl";
    const scrub = createTextScrubber([secret], REDACTED);
    // Encoded twice: the scrubber knows a secret's once-encoded spelling, so only the decoded
    // text shows it, and that text is what is logged.
    const encoded = full(full(secret));
    const edges: [string, string][] = [
      ["%ED%9F%BF", "\uD7FF"],
      ["%EE%80%80", "\uE000"],
      ["%E0%A0%80", "\u0800"],
      ["%F0%90%80%80", "\u{10000}"],
      ["%F4%8F%BF%BF", "\u{10FFFF}"],
      ["%C2%80", "\u0080"],
      // Hex digits in either case, decoded from their bytes (probe 79a F2).
      ["%c3%a9%E2%82%aC", "\u00e9\u20ac"],
      ["%fF", "%fF"],
      // A surrogate, overlong forms and a code point past U+10FFFF: no character, kept as sent.
      ["%ED%A0%80", "%ED%A0%80"],
      ["%E0%80%80", "%E0%80%80"],
      ["%F0%80%80%80", "%F0%80%80%80"],
      ["%F4%90%80%80", "%F4%90%80%80"],
      ["%C0%80", "%C0%80"],
    ];
    for (const [sent, logged] of edges) {
      expect(scrubAnySpelling(`${sent}${encoded}${sent}%41`, scrub)).toBe(
        `${logged}${REDACTED}${logged}A`,
      );
    }
  });

  test("a credential name is still one run of name characters holding a word, followed by = (H2's rewrite)", () => {
    const scrub = createTextScrubber([], REDACTED);
    expect(scrub("/a?user_token=abc&x=1")).toBe(`/a?user_token=${REDACTED}&x=1`);
    expect(scrub("/a?x=1&client.SECRET-2=abc#f")).toBe(`/a?x=1&client.SECRET-2=${REDACTED}#f`);
    expect(scrub("/a?pw=abc")).toBe(`/a?pw=${REDACTED}`);
    // A word inside a longer name counts; a name without one, or a word with no `=`, does not.
    expect(scrub("/a?mykeyring=abc")).toBe(`/a?mykeyring=${REDACTED}`);
    expect(scrub("/a?pwx=abc&name=keykeykey")).toBe("/a?pwx=abc&name=keykeykey");
    expect(scrub(`/a=b/${"key".repeat(5000)}`)).toBe(`/a=b/${"key".repeat(5000)}`);
  });

  test("a non-ASCII secret read as Latin-1, a path's backslash, Latin-1 escapes, base64 of escaped JSON (H3–H5)", () => {
    const secret = 'Sécrét-"quoted"\\väl-0123456789';
    const scrub = createTextScrubber([secret], REDACTED);
    const spellings = [
      Buffer.from(secret).toString("latin1"),
      secret.replace(/\\/g, "/"),
      [...secret]
        .map((char) => `%${char.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`)
        .join(""),
      Buffer.from(`{"k":${JSON.stringify(secret)}}`).toString("base64"),
    ];
    for (const spelling of spellings) {
      expect(scrub(`before ${spelling} after`)).toContain(REDACTED);
    }
  });
});

describe("JWT shapes, found in one pass over each run (probe 14i I1)", () => {
  test("redacted as the pattern eyJ…\\.….… would, leftmost first, glued to text too", () => {
    const scrub = createTextScrubber([], REDACTED);
    const cases: [string, string][] = [
      ["a eyJhb.cd.ef b", `a ${REDACTED} b`],
      ["xeyJhb.cd.ef", `x${REDACTED}`],
      ["foo.eyJx.y.z", `foo.${REDACTED}`],
      ["eyJa.b.c.d.eyJe.f.g", `${REDACTED}.d.${REDACTED}`],
      ["eyJa..b", "eyJa..b"],
      ["eyJa.b", "eyJa.b"],
      ["eyJa.b.", REDACTED],
      ["q.eyJ.x.y.eyJ", `q.${REDACTED}.eyJ`],
      // A long run of headers with no dot: nothing to redact, and one pass over it.
      ["eyJ".repeat(5000), "eyJ".repeat(5000)],
    ];
    for (const [text, expected] of cases) expect(scrub(text)).toBe(expected);
  });
});

describe("a secret in another case (probe 30b F3)", () => {
  const secret = "Zq8xJwtSigningKeyFor-Palisade-0042";
  const upper = secret.toUpperCase();
  const lower = secret.toLowerCase();

  test("upper- or lower-cased, in a path, an agent, a request id and a log message: nothing of it is logged", async () => {
    current = buildTestApp({ env: { OPENAI_API_KEY: secret } });
    const response = await send(current, `/nope/${upper}`, {
      headers: { "user-agent": `ua ${lower} tail`, "x-request-id": upper },
    });
    expect(response.status).toBe(404);
    // Answered as it came (probe 93f F1: replaced, it said the string was a secret), but the
    // request is recorded under an id made here.
    expect(response.headers.get("x-request-id")).toBe(upper);
    current.logger.error({ note: `upstream said ${upper.slice(0, 10)}${lower.slice(10)}` }, "odd");
    const text = current.logs.text.toLowerCase();
    expect(text).not.toContain(lower);
    expect(text).not.toContain(encodeURIComponent(lower));
    expect(current.logs.text).toContain(REDACTED);
  });

  test("case-folded in the scrubber's JSON mode, percent-encoded, and glued to other text", () => {
    const scrub = createTextScrubber([secret], "[X]", { json: true });
    expect(scrub(`{"a":"x${upper}y"}`)).toBe('{"a":"x[X]y"}');
    const plain = createTextScrubber([secret], "[X]");
    expect(plain(`p=${encodeURIComponent(upper)}&q=1`)).not.toContain(upper.slice(0, 12));
    // Text that only shares a prefix is left alone.
    expect(plain(upper.slice(0, 20))).toBe(upper.slice(0, 20));
  });
});
