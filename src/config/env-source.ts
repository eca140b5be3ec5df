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

/** C0 controls (a tab, a line break inside the value, a NUL) and DEL. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

const readUtf8: ReadTextFile = (path) => readBoundedFile(path, MAX_SECRET_FILE_BYTES);

/**
 * Returns the environment with each secret's `NAME_FILE` folded into `NAME`. Setting both is refused
 * rather than guessed at, since either could be the stale one.
 */
export function resolveFileSecrets(
  env: Environment,
  readFile: ReadTextFile = readUtf8,
): Environment {
  const resolved: Environment = { ...env };
  for (const name of SECRET_VARIABLES) {
    const filePath = env[`${name}_FILE`];
    if (filePath === undefined || filePath === "") continue;
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
    // Secret files are usually written with a trailing newline by `echo` or an editor (two by
    // `echo "$KEY" >> file` on a file that ended with one, and CR LF on Windows).
    const value = contents.replace(/[\r\n]+$/, "");
    if (value === "") throw new ConfigError(`${name}_FILE`, "points to an empty file");
    // No secret holds a control character, and one written as UTF-16 without a byte-order mark
    // (`iconv -t UTF-16LE`, .NET's `Encoding.Unicode`) is valid UTF-8 with a NUL after each
    // character: twice the bytes, and the pattern checks saw no words, so `changeme-please!`
    // started production (probe 71d F1).
    const control = CONTROL_CHARACTER.exec(value);
    if (control !== null) {
      const point = control[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
      throw new ConfigError(
        `${name}_FILE`,
        `holds a control character (U+${point})${point === "0000" ? ", as a UTF-16 file does" : ""}: write the secret as one line of UTF-8 text`,
      );
    }
    resolved[name] = value;
  }
  return resolved;
}
