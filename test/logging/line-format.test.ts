/**
 * The exact lines the logger writes: key order, level names and filtering, child bindings,
 * redaction by path, the scrubber, error serialisation and escaping. These lines were pinned
 * against pino (which the logger replaced) before the change, so what operators and log shippers
 * parse did not move.
 */
import { describe, expect, test } from "bun:test";
import { createLogger, REDACTED } from "../../src/logging/logger";

type Level = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

function capture(level: Level = "info", secretValues: string[] = []) {
  const writes: string[] = [];
  const logger = createLogger({
    level,
    secretValues,
    destination: { write: (line: string) => void writes.push(line) },
  });
  return { logger, writes };
}

const ISO_TIME = /"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"/;

/** The one line written, with its time checked and replaced by `T`. */
function only(writes: string[]): string {
  expect(writes).toHaveLength(1);
  const line = writes[0]!;
  expect(line.endsWith("}\n")).toBe(true);
  const time = ISO_TIME.exec(line)?.[1];
  expect(time).toBeDefined();
  expect(Math.abs(Date.parse(time!) - Date.now())).toBeLessThan(60_000);
  return line.replace(ISO_TIME, '"time":"T"');
}

const HEAD = '{"level":"info","time":"T","service":"palisade"';

describe("line layout", () => {
  test("level, time, service, the fields in the order given, then msg", () => {
    const { logger, writes } = capture();
    logger.warn({ a: 1, b: "two", c: [1, "x"], d: { e: null }, f: true }, "something happened");
    expect(only(writes)).toBe(
      '{"level":"warn","time":"T","service":"palisade","a":1,"b":"two","c":[1,"x"],"d":{"e":null},"f":true,"msg":"something happened"}\n',
    );
  });

  test("a message alone; fields alone (no msg key)", () => {
    const first = capture();
    first.logger.info("listening");
    expect(only(first.writes)).toBe(`${HEAD},"msg":"listening"}\n`);
    const second = capture();
    second.logger.info({ count: 3 });
    expect(only(second.writes)).toBe(`${HEAD},"count":3}\n`);
  });

  test("undefined and function fields are left out, NaN and the infinities are null, dates are ISO strings", () => {
    const { logger, writes } = capture();
    logger.info(
      {
        gone: undefined,
        fn: () => 1,
        nan: Number.NaN,
        inf: Number.POSITIVE_INFINITY,
        at: new Date(0),
        kept: 0,
      },
      "m",
    );
    expect(only(writes)).toBe(
      `${HEAD},"nan":null,"inf":null,"at":"1970-01-01T00:00:00.000Z","kept":0,"msg":"m"}\n`,
    );
  });

  test("a field named like a line key is written after them, as given (the last one wins when parsed)", () => {
    const { logger, writes } = capture();
    logger.info({ msg: "inner", level: "x", service: "s" }, "outer");
    expect(only(writes)).toBe(`${HEAD},"msg":"inner","level":"x","service":"s","msg":"outer"}\n`);
  });

  test("a % in a message is written as is", () => {
    const { logger, writes } = capture();
    logger.info("100% %s done");
    expect(only(writes)).toBe(`${HEAD},"msg":"100% %s done"}\n`);
  });

  test("control characters, quotes and lone surrogates are escaped as JSON.stringify escapes them, and line separators too", () => {
    const { logger, writes } = capture();
    const value = 'a\u0000b\n\r\t"\\\u001b[31m\u2028\u007f\ud800';
    logger.info({ value }, value);
    const line = only(writes);
    const json = JSON.stringify(value).replace("\u2028", "\\u2028");
    expect(line).toBe(`${HEAD},"value":${json},"msg":${json}}\n`);
    expect(line.slice(0, -1)).not.toContain("\n");
    expect(JSON.parse(line).value).toBe(value);
  });
});

describe("levels", () => {
  const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"] as const;

  test("each method writes its level's name", () => {
    const { logger, writes } = capture("trace");
    for (const level of LEVELS) logger[level](`at ${level}`);
    expect(writes.map((line) => JSON.parse(line).level)).toEqual([...LEVELS]);
  });

  test.each(LEVELS)(
    "at LOG_LEVEL=%s only that level and the more severe ones are written",
    (level) => {
      const { logger, writes } = capture(level);
      for (const each of LEVELS) logger[each]("x");
      const enabled = LEVELS.slice(0, LEVELS.indexOf(level) + 1);
      expect(writes.map((line) => JSON.parse(line).level)).toEqual([...enabled]);
      for (const each of LEVELS) expect(logger.isLevelEnabled(each)).toBe(enabled.includes(each));
    },
  );

  test("silent writes nothing", () => {
    const { logger, writes } = capture("silent");
    for (const level of LEVELS) logger[level]({ a: 1 }, "x");
    expect(writes).toEqual([]);
    for (const level of LEVELS) expect(logger.isLevelEnabled(level)).toBe(false);
  });
});

describe("child loggers", () => {
  test("bindings come after service and before the fields; a child's child adds its own", () => {
    const { logger, writes } = capture();
    const child = logger.child({ module: "outbox" });
    child.warn({ a: 1 }, "child");
    child.child({ worker: 2 }).info("grandchild");
    expect(writes).toHaveLength(2);
    expect(only([writes[0]!])).toBe(
      '{"level":"warn","time":"T","service":"palisade","module":"outbox","a":1,"msg":"child"}\n',
    );
    expect(only([writes[1]!])).toBe(`${HEAD},"module":"outbox","worker":2,"msg":"grandchild"}\n`);
    expect(logger.bindings()).toEqual({ service: "palisade" });
    expect(child.child({ worker: 2 }).bindings()).toEqual({
      service: "palisade",
      module: "outbox",
      worker: 2,
    });
  });

  test("bindings are redacted and scrubbed like fields; the child keeps its parent's level", () => {
    const secret = "child-binding-secret-0123456789";
    const { logger, writes } = capture("warn", [secret]);
    const child = logger.child({ password: "hunter2hunter2", note: `has ${secret}` });
    child.info("not written");
    child.warn("written");
    expect(only(writes)).toBe(
      `{"level":"warn","time":"T","service":"palisade","password":"${REDACTED}","note":"has ${REDACTED}","msg":"written"}\n`,
    );
  });
});

describe("redaction by path", () => {
  // Each configured path, and the value next to it that stays.
  const CASES: [string, Record<string, unknown>, string][] = [
    [
      "headers.authorization",
      { headers: { authorization: "Bearer x", accept: "a" } },
      `"headers":{"authorization":"${REDACTED}","accept":"a"}`,
    ],
    [
      "headers.cookie",
      { headers: { cookie: "s=1", accept: "a" } },
      `"headers":{"cookie":"${REDACTED}","accept":"a"}`,
    ],
    [
      'headers["set-cookie"]',
      { headers: { "set-cookie": ["s=1"], accept: "a" } },
      `"headers":{"set-cookie":"${REDACTED}","accept":"a"}`,
    ],
    [
      'headers["x-api-key"]',
      { headers: { "x-api-key": "k", accept: "a" } },
      `"headers":{"x-api-key":"${REDACTED}","accept":"a"}`,
    ],
    [
      'headers["x-csrf-token"]',
      { headers: { "x-csrf-token": "t", accept: "a" } },
      `"headers":{"x-csrf-token":"${REDACTED}","accept":"a"}`,
    ],
    ...["password", "accessToken", "refreshToken", "token", "secret", "apiKey"].map(
      (name): [string, Record<string, unknown>, string] => [
        `*.${name}`,
        { body: { [name]: "v", email: "e" }, headers: { [name]: "v" } },
        `"body":{"${name}":"${REDACTED}","email":"e"},"headers":{"${name}":"${REDACTED}"}`,
      ],
    ),
    ...["password", "accessToken", "refreshToken", "apiKey"].map(
      (name): [string, Record<string, unknown>, string] => [
        name,
        { [name]: { nested: "v" }, email: "e" },
        `"${name}":"${REDACTED}","email":"e"`,
      ],
    ),
  ];

  test.each(CASES)("%s", (_path, fields, written) => {
    const { logger, writes } = capture();
    logger.info(fields, "r");
    expect(only(writes)).toBe(`${HEAD},${written},"msg":"r"}\n`);
  });

  test("a configured name present with no value is still redacted; an absent one is not added", () => {
    const { logger, writes } = capture();
    logger.info({
      headers: { authorization: undefined },
      body: { password: undefined },
      password: undefined,
    });
    expect(only(writes)).toBe(
      `${HEAD},"headers":{"authorization":"${REDACTED}"},"body":{"password":"${REDACTED}"}}\n`,
    );
  });

  test("the paths reach one level down: deeper names, array items and top-level token/secret are left to the scrubber", () => {
    const { logger, writes } = capture();
    const fields = {
      body: { user: { password: "p" } },
      list: [{ password: "p" }],
      token: "t",
      secret: "s",
    };
    logger.info(fields, "r");
    expect(only(writes)).toBe(
      `${HEAD},"body":{"user":{"password":"p"}},"list":[{"password":"p"}],"token":"t","secret":"s","msg":"r"}\n`,
    );
  });

  test("redaction does not change the object logged", () => {
    const { logger } = capture();
    const fields = { headers: { authorization: "Bearer x" }, password: "p", body: { token: "t" } };
    logger.info(fields, "r");
    expect(fields).toEqual({
      headers: { authorization: "Bearer x" },
      password: "p",
      body: { token: "t" },
    });
  });
});

describe("the scrubber runs over every line", () => {
  test("a configured secret and an API key in the message or any field are replaced", () => {
    const secret = "whsec_0123456789abcdefghijklmnop";
    const key = "pal_live_ABCDEFGHIJKLMNOPQRSTUVWX";
    const { logger, writes } = capture("info", [secret]);
    logger.error({ note: `upstream said ${secret}`, deep: { k: key } }, `failed with ${secret}`);
    expect(only(writes)).toBe(
      `{"level":"error","time":"T","service":"palisade","note":"upstream said ${REDACTED}","deep":{"k":"${REDACTED}"},"msg":"failed with ${REDACTED}"}\n`,
    );
  });
});

describe("errors", () => {
  /** The `err` of the one line written, and the line with its stack replaced by `S`. */
  function errLine(writes: string[]): { err: Record<string, unknown>; line: string } {
    const line = only(writes);
    const err = JSON.parse(line).err as Record<string, unknown>;
    return { err, line: line.replace(JSON.stringify(err.stack), '"S"') };
  }

  test("err is written as type, message and stack; the stack is the error's own", () => {
    const { logger, writes } = capture();
    const error = new TypeError("boom");
    logger.error({ err: error, id: 3 }, "failed");
    const { err, line } = errLine(writes);
    expect(err.stack).toBe(error.stack!);
    expect(err.stack).toContain("line-format.test.ts");
    expect(line).toBe(
      '{"level":"error","time":"T","service":"palisade","err":{"type":"TypeError","message":"boom","stack":"S"},"id":3,"msg":"failed"}\n',
    );
  });

  test("without a message, the error's message is the line's", () => {
    const { logger, writes } = capture();
    logger.error({ err: new RangeError("out of range") });
    expect(errLine(writes).line).toBe(
      '{"level":"error","time":"T","service":"palisade","err":{"type":"RangeError","message":"out of range","stack":"S"},"msg":"out of range"}\n',
    );
  });

  test("an error as the first argument is written as err", () => {
    const first = capture();
    first.logger.error(new Error("first"), "with a message");
    expect(errLine(first.writes).line).toBe(
      '{"level":"error","time":"T","service":"palisade","err":{"type":"Error","message":"first","stack":"S"},"msg":"with a message"}\n',
    );
    const second = capture();
    second.logger.warn(new Error("alone"));
    expect(errLine(second.writes).line).toBe(
      '{"level":"warn","time":"T","service":"palisade","err":{"type":"Error","message":"alone","stack":"S"},"msg":"alone"}\n',
    );
  });

  test("the error's own enumerable fields follow (a SQLite code, say)", () => {
    const { logger, writes } = capture();
    logger.error(
      { err: Object.assign(new Error("locked"), { code: "SQLITE_BUSY", errno: 5 }) },
      "x",
    );
    expect(errLine(writes).line).toBe(
      '{"level":"error","time":"T","service":"palisade","err":{"type":"Error","message":"locked","stack":"S","code":"SQLITE_BUSY","errno":5},"msg":"x"}\n',
    );
  });

  test("a cause is appended to the message and the stack", () => {
    const { logger, writes } = capture();
    const inner = new Error("inner");
    const outer = new Error("outer", { cause: inner });
    logger.error({ err: outer }, "x");
    const { err, line } = errLine(writes);
    expect(err.stack).toBe(`${outer.stack}\ncaused by: ${inner.stack}`);
    expect(line).toBe(
      '{"level":"error","time":"T","service":"palisade","err":{"type":"Error","message":"outer: inner","stack":"S"},"msg":"x"}\n',
    );
  });

  test("an err that is not an error is written as it is; an error under another name as JSON does ({})", () => {
    const { logger, writes } = capture();
    logger.error({ err: "just text" }, "a");
    logger.error({ failure: new Error("f") }, "b");
    expect(writes.map((line) => line.replace(ISO_TIME, '"time":"T"'))).toEqual([
      '{"level":"error","time":"T","service":"palisade","err":"just text","msg":"a"}\n',
      '{"level":"error","time":"T","service":"palisade","failure":{},"msg":"b"}\n',
    ]);
  });

  test("an AggregateError lists its errors; an error among the error's fields is serialised too, and its credential names censored", () => {
    const { logger, writes } = capture();
    logger.error({ err: new AggregateError([new Error("a"), "plain"], "several") }, "agg");
    const side = new TypeError("side");
    logger.error({ err: Object.assign(new Error("top"), { other: side, token: "tok" }) }, "n");
    const lines = writes.map((line) =>
      line.replace(ISO_TIME, '"time":"T"').replace(/"stack":"(?:[^"\\]|\\.)*"/g, '"stack":"S"'),
    );
    expect(lines).toEqual([
      '{"level":"error","time":"T","service":"palisade","err":{"type":"AggregateError","message":"several","stack":"S","aggregateErrors":[{"type":"Error","message":"a","stack":"S"},"plain"]},"msg":"agg"}\n',
      `{"level":"error","time":"T","service":"palisade","err":{"type":"Error","message":"top","stack":"S","other":{"type":"TypeError","message":"side","stack":"S"},"token":"${REDACTED}"},"msg":"n"}\n`,
    ]);
  });

  test("a VError-style cause() is followed: its stack is appended, its message is already the parent's", () => {
    const { logger, writes } = capture();
    const inner = new Error("inner");
    const outer = Object.assign(new Error("outer: inner"), { cause: () => inner });
    logger.error({ err: outer }, "v");
    const { err } = errLine(writes);
    expect(err.message).toBe("outer: inner");
    expect(err.stack).toBe(`${outer.stack}\ncaused by: ${inner.stack}`);
  });

  test("a message taken from err is written whatever its type; symbols are left out unless censored", () => {
    const { logger, writes } = capture();
    logger.error({ err: { message: 5 } });
    logger.info({ sym: Symbol("s"), password: Symbol("p") }, "sym");
    expect(writes.map((line) => line.replace(ISO_TIME, '"time":"T"'))).toEqual([
      '{"level":"error","time":"T","service":"palisade","err":{"message":5},"msg":5}\n',
      `${HEAD},"password":"${REDACTED}","msg":"sym"}\n`,
    ]);
  });

  test("an error's message and stack are scrubbed like the rest of the line", () => {
    const secret = "sk_live_0123456789abcdefghijkl";
    const { logger, writes } = capture("info", [secret]);
    logger.error({ err: new Error(`upstream refused ${secret}`) }, "x");
    const { err } = errLine(writes);
    expect(err.message).toBe(`upstream refused ${REDACTED}`);
    expect(writes[0]).not.toContain(secret);
  });
});

describe("one write per line", () => {
  test("each line is one write ending in a newline", () => {
    const { logger, writes } = capture();
    logger.info("a");
    logger.warn({ b: 1 }, "b");
    expect(writes).toHaveLength(2);
    for (const line of writes) {
      expect(line.endsWith("\n")).toBe(true);
      expect(line.indexOf("\n")).toBe(line.length - 1);
    }
  });
});

// A field JSON cannot write must not cost the line or the caller. The cycle and the throwing field
// differ from pino on purpose (pino wrote a cycle from a sorted copy, and threw a getter's error at
// the caller); the rest are as pino wrote them.
describe("fields JSON cannot write", () => {
  test("a cycle is written as [Circular] where it closes, the rest of the line as usual", () => {
    const { logger, writes } = capture();
    const circular: Record<string, unknown> = { z: 1, a: 2 };
    circular.self = circular;
    circular.list = [circular, 3];
    logger.info({ circular, after: 1 }, "c");
    expect(only(writes)).toBe(
      `${HEAD},"circular":{"z":1,"a":2,"self":"[Circular]","list":["[Circular]",3]},"after":1,"msg":"c"}\n`,
    );
  });

  test("the same object twice side by side is not a cycle", () => {
    const { logger, writes } = capture();
    const shared = { x: 1 };
    logger.info({ pair: { left: shared, right: shared } }, "s");
    expect(only(writes)).toBe(`${HEAD},"pair":{"left":{"x":1},"right":{"x":1}},"msg":"s"}\n`);
  });

  test("a field whose getter or toJSON throws is [unserializable]; the caller is not thrown at", () => {
    const { logger, writes } = capture();
    const getter = {
      get bad() {
        throw new Error("getter");
      },
    };
    const toJSON = {
      toJSON() {
        throw new Error("toJSON");
      },
    };
    const fields = {
      before: 1,
      get top() {
        throw new Error("top-level getter");
      },
      getter,
      toJSON,
      after: 2,
    };
    expect(() => logger.warn(fields, "t")).not.toThrow();
    expect(only(writes)).toBe(
      '{"level":"warn","time":"T","service":"palisade","before":1,"top":"[unserializable]","getter":"[unserializable]","toJSON":"[unserializable]","after":2,"msg":"t"}\n',
    );
  });

  test("a bigint is written as its digits, as pino wrote it", () => {
    const { logger, writes } = capture();
    logger.info({ big: 12345678901234567890n, nested: { n: 1n } }, "b");
    expect(only(writes)).toBe(`${HEAD},"big":12345678901234567890,"nested":{"n":1},"msg":"b"}\n`);
  });

  test("an error whose cause chain loops is written once, the loop marked", () => {
    const { logger, writes } = capture();
    const first = new Error("first");
    const second = new Error("second", { cause: first });
    first.cause = second;
    logger.error({ err: first }, "loop");
    const err = JSON.parse(only(writes)).err;
    expect(err.message).toBe("first: second: first: ...");
    expect(err.stack).toEndWith("causes have become circular...");
  });
});
