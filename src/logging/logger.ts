/**
 * @module
 * Structured JSON logs through pino. Two layers keep secrets out: paths that carry credentials
 * (Authorization, cookies, passwords, tokens) are redacted by name, and every line is run through
 * the shared scrubber (scrub.ts) before it is written — configured secret values in every
 * spelling, API keys, JWTs, bearer credentials, credential query parameters — so a secret that
 * slips into an error message is still not printed.
 */
import pino, { type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "../config";
import { createTextScrubber } from "./scrub";

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
 * Replaces with [REDACTED] every configured secret value (raw, JSON-escaped, percent-encoded,
 * form-encoded, base64url), API key, JWT, bearer credential and credential query parameter: the
 * shared scrubber of logging/scrub.ts.
 */
export function secretScrubber(secretValues: readonly string[]): (line: string) => string {
  return createTextScrubber(secretValues, REDACTED);
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
  const cut = clean.length > MAX_LOGGED_LENGTH ? `${clean.slice(0, MAX_LOGGED_LENGTH)}…` : clean;
  return cut.replace(
    UNSAFE_CHARACTERS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
