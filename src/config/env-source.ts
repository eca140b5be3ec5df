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
    // Secret files are usually written with a trailing newline by `echo` or an editor.
    const value = contents.replace(/\r?\n$/, "");
    if (value === "") throw new ConfigError(`${name}_FILE`, "points to an empty file");
    resolved[name] = value;
  }
  return resolved;
}
