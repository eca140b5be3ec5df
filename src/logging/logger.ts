/**
 * @module
 * Structured JSON lines, one per call, on stdout:
 * `{"level":"warn","time":"<ISO>","service":"palisade",<child bindings>,<fields>,"msg":"…"}`,
 * the layout pino wrote. This file replaced pino: importing it after Elysia cost ~35 ms and ~5 MB
 * here (this logger: ~6 ms, ~2 MB), for transports, custom levels and serializers we never used,
 * and its line was 2-3x slower than this one. Two layers keep secrets out: fields that
 * carry credentials (Authorization, cookies, passwords, tokens) are censored by name (fields.ts),
 * and every line is run through the shared scrubber (scrub.ts) before it is written — configured
 * secret values in every spelling, API keys, JWTs, bearer credentials, credential query
 * parameters — so a secret that slips into an error message is still not printed.
 *
 * Lines are written synchronously (fd-destination.ts), as pino was configured to: measured with
 * pino, a synchronous write per line cost half of an asynchronous one, and no line is lost when
 * the process dies. To a pipe or socket, which several processes may share, a line longer than one
 * indivisible write is cut to fit (fit-line.ts), so no process splits another's line.
 */
import type { LogLevel } from "../config";
import { fdDestination, type LogDestination } from "./fd-destination";
import { fieldJson, fieldsJson, REDACTED } from "./fields";
import { fitLine } from "./fit-line";
import { bufferLines, type LineBuffer } from "./line-buffer";
import { createRepeatGate, type RepeatGate } from "./repeats";
import { createTextScrubber, type TextScrubberOptions } from "./scrub";
import { REORDERING_CLASS } from "./spell-out";

export type { LogDestination } from "./fd-destination";
export { REDACTED } from "./fields";

export type LevelName = Exclude<LogLevel, "silent">;

const SEVERITY: Record<LogLevel, number> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Number.POSITIVE_INFINITY,
};

export interface LogFn {
  (message: string): void;
  /** Fields (an Error is written as `err`), then the message; without one, `err`'s message. */
  (fields: unknown, message?: string): void;
}

export interface Logger {
  readonly fatal: LogFn;
  readonly error: LogFn;
  readonly warn: LogFn;
  readonly info: LogFn;
  readonly debug: LogFn;
  readonly trace: LogFn;
  readonly level: LogLevel;
  /** Where this logger's lines go. */
  readonly destination: LogDestination;
  /**
   * The same destination, in batches (line-buffer.ts): for the access log's line per request.
   * Waiting lines are written before any line of this logger and by `flush`, so the output keeps
   * its order and a shutdown loses none.
   */
  readonly batched: LineBuffer;
  /**
   * For a line a lasting fault writes once per request (a store or the database down): the first
   * line of `key` is written, the others of the next 10 s only counted, and one line then says how
   * many (logging/repeats). `key` is chosen by the code, never client text.
   */
  repeating(key: string): Pick<Logger, "error" | "warn">;
  /** A logger whose every line also carries `bindings`, after `service`. */
  child(bindings: Record<string, unknown>): Logger;
  bindings(): Record<string, unknown>;
  isLevelEnabled(level: string): boolean;
  flush(): void;
}

export interface LoggerOptions {
  level: LogLevel;
  /** Values scrubbed from every line, whatever field they appear in. */
  secretValues?: readonly string[];
  /** Where lines go; stdout (fd 1, synchronously) by default. Tests pass a collecting one. */
  destination?: LogDestination;
  /** How long the repeats of a `repeating` key are counted instead of written (10 s). */
  repeatIntervalMs?: number;
}

/**
 * Replaces with [REDACTED] every configured secret value (raw, JSON-escaped, percent-encoded,
 * form-encoded, base64url), API key, JWT, bearer credential and credential query parameter: the
 * shared scrubber of logging/scrub.ts.
 */
export function secretScrubber(
  secretValues: readonly string[],
  options?: TextScrubberOptions,
): (line: string) => string {
  return createTextScrubber(secretValues, REDACTED, options);
}

const ignore: LogFn = () => {};

/** A line without a message of its own takes its `err`'s (when its fields have no `msg`). */
function messageOfErr(fields: object): unknown {
  try {
    const { err, msg } = fields as { err?: { message?: unknown }; msg?: unknown };
    return msg === undefined && err ? err.message : undefined;
  } catch {
    return undefined;
  }
}

interface Shared {
  level: LogLevel;
  destination: LogDestination;
  batched: LineBuffer;
  scrub: (line: string) => string;
  repeats: RepeatGate;
}

function buildLogger(shared: Shared, bound: Record<string, unknown>, boundJson: string): Logger {
  const { destination, batched, scrub } = shared;
  const indivisible = destination.indivisibleBytes;
  const threshold = SEVERITY[shared.level];
  const method = (level: LevelName): LogFn => {
    if (SEVERITY[level] < threshold) return ignore;
    const head = `{"level":"${level}","time":"`;
    return function log(first: unknown, second?: string) {
      let fields = "";
      let message: unknown = second;
      if (typeof first === "object" && first !== null) {
        if (first instanceof Error) {
          fields = fieldsJson({ err: first });
          if (message === undefined) message = first.message;
        } else {
          fields = fieldsJson(first);
          if (message === undefined) message = messageOfErr(first);
        }
      } else if (first !== undefined && first !== null) {
        message = first;
      }
      let tail = "}\n";
      if (message !== undefined) {
        const json =
          typeof message === "string" ? JSON.stringify(message) : fieldJson("msg", message);
        if (json !== undefined) tail = `,"msg":${json}}\n`;
      }
      if (batched.pending) batched.flush();
      const line = escapeRawInJson(
        scrub(`${head}${new Date().toISOString()}"${boundJson}${fields}${tail}`),
      );
      destination.write(indivisible === undefined ? line : fitLine(line, indivisible));
    };
  };
  const error = method("error");
  const warn = method("warn");
  const repeatingOf = (key: string, level: "error" | "warn", write: LogFn): LogFn => {
    if (write === ignore) return ignore;
    return (first: unknown, second?: string) => {
      if (shared.repeats.admit(key, level, requestIdOf(first))) write(first, second);
    };
  };
  return {
    fatal: method("fatal"),
    error,
    warn,
    info: method("info"),
    debug: method("debug"),
    trace: method("trace"),
    level: shared.level,
    destination,
    batched,
    child: (bindings) =>
      buildLogger(shared, { ...bound, ...bindings }, boundJson + fieldsJson(bindings)),
    repeating: (key) => ({
      error: repeatingOf(key, "error", error),
      warn: repeatingOf(key, "warn", warn),
    }),
    bindings: () => ({ ...bound }),
    isLevelEnabled: (level) =>
      level !== "silent" &&
      Object.hasOwn(SEVERITY, level) &&
      SEVERITY[level as LogLevel] >= threshold,
    flush: () => {
      shared.repeats.flush();
      batched.flush();
      destination.flush?.();
    },
  };
}

export function createLogger(options: LoggerOptions): Logger {
  const { level, secretValues = [], destination } = options;
  const base = { service: "palisade" };
  const sink = destination ?? fdDestination(1);
  const repeats = createRepeatGate({
    intervalMs: options.repeatIntervalMs,
    summarize: ({ key, level, count, intervalMs, lastRequestId }) => {
      const seconds = Math.round(intervalMs) / 1000;
      logger[level](
        { repeated: key, count, seconds, lastRequestId },
        `${key}: ${count} more in the last ${seconds} s, counted here rather than logged each`,
      );
    },
  });
  const logger = buildLogger(
    {
      level,
      destination: sink,
      batched: bufferLines(sink),
      // Whole serialised lines: a replacement must keep each one JSON.
      scrub: secretScrubber(secretValues, { json: true }),
      repeats,
    },
    base,
    fieldsJson(base),
  );
  return logger;
}

/** The request id a line's fields carry, for the summary of lines counted. */
function requestIdOf(fields: unknown): string | undefined {
  if (typeof fields !== "object" || fields === null) return undefined;
  const { requestId } = fields as { requestId?: unknown };
  return typeof requestId === "string" ? requestId : undefined;
}

/** Control characters, and what breaks or reorders a line (logging/spell-out's one list). */
const UNSAFE_CHARACTERS = new RegExp(`[\\u0000-\\u001f\\u007f-\\u009f${REORDERING_CLASS}]`, "g");

/**
 * What JSON leaves raw that splits or reorders a line in a viewer or a terminal: C1 controls,
 * the line and paragraph separators, and the bidirectional controls (a right-to-left override
 * shows a line's end first). Outside a string a JSON line holds none of them.
 */
const RAW_IN_JSON = new RegExp(`[\\u0080-\\u009f${REORDERING_CLASS}]`);
const RAW_IN_JSON_ALL = new RegExp(RAW_IN_JSON.source, "g");

/** A serialised line with those written as JSON escapes: the same JSON, one visible line. */
export function escapeRawInJson(line: string): string {
  return RAW_IN_JSON.test(line)
    ? line.replace(RAW_IN_JSON_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
    : line;
}
const MAX_LOGGED_LENGTH = 512;

/**
 * Client text cut to what a log line (or an audit row) keeps of it: 512 characters, then `…`. Cut
 * between characters: half a surrogate pair in an audit row's route would be stored by SQLite as
 * U+FFFD, and the row would no longer verify (the class of probes 37a F1, 37b F1).
 */
export function cutClientText(text: string): string {
  return text.length > MAX_LOGGED_LENGTH
    ? `${cutBetweenCharacters(text, MAX_LOGGED_LENGTH)}…`
    : text;
}

/** At most `max` UTF-16 units of `text`, never ending on the first half of a surrogate pair. */
export function cutBetweenCharacters(text: string, max: number): string {
  const cut = text.slice(0, max);
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}

/**
 * Text from outside (a client, Stripe, an upstream's error) as stored: well-formed (SQLite keeps an
 * unpaired surrogate as U+FFFD, so a sealed row would no longer match its seal, and an audit row
 * would read otherwise than the column) and at most `max` UTF-16 units, cut between characters.
 */
export function storedText(text: string, max: number): string {
  return cutBetweenCharacters(text.toWellFormed(), max);
}

/**
 * Makes a client-supplied value safe to log: `scrub` runs first, on the whole value (a secret cut
 * in two would no longer be recognised), then control characters, CR/LF and Unicode line
 * separators become visible escapes (JSON encoding escapes most, but not U+2028/2029, and log
 * viewers differ), and long values are cut so a client cannot flood a line.
 */
export function logSafe(
  value: string | null | undefined,
  scrub?: (text: string) => string,
): string | undefined {
  if (value === null || value === undefined) return undefined;
  const clean = scrub ? scrub(value) : value;
  return cutClientText(clean).replace(
    UNSAFE_CHARACTERS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
