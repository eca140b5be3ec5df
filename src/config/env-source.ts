/**
 * @module
 * Reads raw variable values, resolving `NAME_FILE` (Docker secrets: the file's contents are the
 * value) for every secret.
 */
import { readBoundedFile, UnreadableFile } from "./bounded-file";
import { ConfigError } from "./error";
import { SECRET_VARIABLES } from "./variables";

export type Environment = Record<string, string | undefined>;
export type ReadTextFile = (path: string) => string;

/** Far beyond any secret (a key is tens of bytes, a PEM a few KB). */
export const MAX_SECRET_FILE_BYTES = 64 * 1024;

/**
 * A character no secret holds: a control (C0 with the tab and a line break inside, DEL, C1 such as
 * NEL), an invisible format character (a zero-width space, a byte-order mark inside, a soft
 * hyphen, a bidirectional control) or a line or paragraph separator (probe 72b F8).
 */
const HIDDEN_CHARACTER = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
/** Why a secret most likely holds the character, where one cause is common. */
const HINTS: Record<string, string> = {
  "0000": ", as a UTF-16 file does",
  // `openssl rand -base64 64` wraps at 64 characters (probe 72c A4).
  "000A": ", as base64 wrapped over lines (openssl rand -base64 past 48 bytes: add -A) does",
};

/**
 * The value without the line endings at its end: the file's or the shell's, not the secret's. A
 * loop from the end, not `/[\r\n]+$/`, which tries again from each line break of a long run of
 * them inside a value (quadratic in a 64 KiB file of them).
 */
function withoutTrailingLineEndings(value: string): string {
  let end = value.length;
  while (end > 0 && (value[end - 1] === "\n" || value[end - 1] === "\r")) end--;
  return value.slice(0, end);
}

const readUtf8: ReadTextFile = (path) => readBoundedFile(path, MAX_SECRET_FILE_BYTES);

/**
 * Returns the environment with each secret's `NAME_FILE` folded into `NAME`, every secret (from a
 * file or the environment alike) without the line endings at its end and refused when it holds any
 * other hidden character. Setting both `NAME` and `NAME_FILE` is refused rather than guessed at,
 * since either could be the stale one.
 */
export function resolveFileSecrets(
  env: Environment,
  readFile: ReadTextFile = readUtf8,
): Environment {
  const resolved: Environment = { ...env };
  for (const name of SECRET_VARIABLES) {
    const filePath = env[`${name}_FILE`];
    if (filePath === undefined || filePath === "") {
      // The same value from the environment as from a file: `kubectl create secret --from-file`
      // leaves the file's line ending in the variable, and replicas given the file and the
      // variable signed with two keys (probe 72b F7).
      const given = env[name];
      if (given !== undefined && given !== "") resolved[name] = oneLine(name, given);
      continue;
    }
    if (env[name] !== undefined && env[name] !== "") {
      throw new ConfigError(`${name}_FILE`, `is set together with ${name}; set only one`);
    }
    let contents: string;
    try {
      contents = readFile(filePath);
    } catch (error) {
      const reason =
        error instanceof UnreadableFile
          ? error.reason
          : ((error as NodeJS.ErrnoException).code ?? "unreadable");
      throw new ConfigError(`${name}_FILE`, `cannot be read (${reason})`);
    }
    if (withoutTrailingLineEndings(contents) === "") {
      throw new ConfigError(`${name}_FILE`, "points to an empty file");
    }
    resolved[name] = oneLine(`${name}_FILE`, contents);
  }
  return resolved;
}

/**
 * The secret without the line endings at its end (an `echo` or an editor writes one, `echo "$KEY"
 * >> file` two, Windows CR LF), refused, naming `variable`, when it holds another hidden character:
 * one written as UTF-16 without a byte-order mark (`iconv -t UTF-16LE`, .NET's `Encoding.Unicode`)
 * is valid UTF-8 with a NUL after each character, twice the bytes, and the pattern checks saw no
 * words, so `changeme-please!` started production (probe 71d F1).
 */
function oneLine(variable: string, raw: string): string {
  const value = withoutTrailingLineEndings(raw);
  const hidden = HIDDEN_CHARACTER.exec(value);
  if (hidden !== null) {
    const point = hidden[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    throw new ConfigError(
      variable,
      `holds a control or invisible character (U+${point})${HINTS[point] ?? ""}: write the secret as one line of UTF-8 text`,
    );
  }
  return value;
}
