/**
 * Where a credential parameter's value ends: nothing of a passphrase with spaces, quotes or
 * backslashes may leak, in a URL or in free text, and every line stays valid JSON (the logger
 * scrubs whole serialised lines, the access log scrubs client values before serialising them).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createLogger, REDACTED } from "../../src/logging/logger";
import { buildTestApp, LogCapture, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** [client text, what is logged of it]: the value runs to `&`, `#`, a line break or the end. */
const CASES: [string, string][] = [
  ["x password=hunter4 hunter5", `x password=${REDACTED}`],
  ['token=UaTokenLeakValue"rest', `token=${REDACTED}`],
  ['token=UaTokenLeakValue", "more": "rest', `token=${REDACTED}`],
  ["secret=Leak\\Value\\", `secret=${REDACTED}`],
  ['passphrase=Leak\\"Value\\\\"rest', `passphrase=${REDACTED}`],
  ["session=LeakValue; path=/; other", `session=${REDACTED}`],
  ["/cb?a=1&token=LeakValue rest&next=2#frag", `/cb?a=1&token=${REDACTED}&next=2#frag`],
  ["/cb?code=LeakValue#frag", `/cb?code=${REDACTED}#frag`],
  ["api_key='LeakValue' tail", `api_key=${REDACTED}`],
];

function expectNoLeak(text: string) {
  for (const fragment of ["hunter", "Leak", "rest", "more", "Value", "path=/"]) {
    expect(text).not.toContain(fragment);
  }
}

describe("a credential parameter's value is redacted to its end", () => {
  test("through the logger: in a message and a field, the line stays JSON and the next field survives", () => {
    const logs = new LogCapture();
    const logger = createLogger({ level: "info", destination: logs });
    for (const [text] of CASES) logger.warn({ userAgent: text, after: "kept" }, text);
    expect(logs.lines).toHaveLength(CASES.length);
    for (const [i, line] of logs.lines.entries()) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      const expected = CASES[i]![1];
      expect(entry.userAgent).toBe(expected);
      expect(entry.msg).toBe(expected);
      expect(entry.after).toBe("kept");
      expect(entry.level).toBe("warn");
    }
    expectNoLeak(logs.text);
  });

  test("through the logger: a line break ends the value; a field after a backslash-ending value is intact", () => {
    const logs = new LogCapture();
    const logger = createLogger({ level: "info", destination: logs });
    logger.info({ a: "token=LeakValue\\", b: "password=x", c: "kept" }, "password=a b\nnext line");
    const entry = JSON.parse(logs.lines[0]!) as Record<string, unknown>;
    expect(entry).toMatchObject({
      a: `token=${REDACTED}`,
      b: `password=${REDACTED}`,
      c: "kept",
      msg: `password=${REDACTED}\nnext line`,
    });
  });

  test("through the access log (client values scrubbed before serialising): user agents", async () => {
    current = buildTestApp();
    for (const [text] of CASES)
      await send(current, "/nothing", { headers: { "user-agent": text } });
    const requests = current.logs.lines
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((entry) => entry.msg === "request");
    expect(requests.map((entry) => entry.userAgent)).toEqual(CASES.map(([, logged]) => logged));
    expectNoLeak(current.logs.text);
  });

  test("ordinary text with no credential parameter is left alone", () => {
    const logs = new LogCapture();
    const logger = createLogger({ level: "info", destination: logs });
    logger.info({ query: "q=shoes&page=2", note: 'said "hi"' }, "a=1 b=2");
    expect(JSON.parse(logs.lines[0]!)).toMatchObject({
      query: "q=shoes&page=2",
      note: 'said "hi"',
      msg: "a=1 b=2",
    });
  });
});

describe("a configured secret whose raw spelling holds JSON syntax", () => {
  test("cannot cut a line: only the spellings a JSON string can hold are replaced in a line", () => {
    const secret = 'quote","b":"xyz';
    const logs = new LogCapture();
    const logger = createLogger({ level: "info", secretValues: [secret], destination: logs });
    // The serialised line holds the secret's raw characters across two fields.
    logger.info({ a: "quote", b: "xyz" }, "fields");
    logger.info({ c: secret }, `value ${encodeURIComponent(secret)}`);
    const [first, second] = logs.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(first).toMatchObject({ a: "quote", b: "xyz" });
    expect(second).toMatchObject({ c: REDACTED, msg: `value ${REDACTED}` });
  });
});
