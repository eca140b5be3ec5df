/**
 * @module
 * Secret files other users can read. A `NAME_FILE` written under the usual umask (`openssl rand …
 * > file` makes it 0644) lets every local user read the secret (probe 30d F8), as a database file
 * made that way did before the start said so. The start and `config:check` say it, naming the
 * variable and the mode, never the value; the file is read all the same (a refusal would stop
 * deployments that work), and a group may read it (0640 for the group the service runs in is how
 * a secret is shared with it).
 */
import { statSync } from "node:fs";
import type { Environment } from "./env-source";
import { SECRET_VARIABLES } from "./variables";

/** A `NAME_FILE` whose file other users may read or write, and its permission bits. */
export interface LooseSecretFile {
  variable: string;
  mode: string;
}

/** Permission bits of `path` (following links, as reading it does); null when it cannot be stat'ed. */
export type FileModeOf = (path: string) => number | null;

const modeOf: FileModeOf = (path) => {
  try {
    return statSync(path).mode & 0o7777;
  } catch {
    return null;
  }
};

/** Other users can read or write it, or its group can write it. */
const LOOSE_BITS = 0o027;

export function looseSecretFiles(
  env: Environment,
  fileModeOf: FileModeOf = modeOf,
): LooseSecretFile[] {
  const loose: LooseSecretFile[] = [];
  for (const name of SECRET_VARIABLES) {
    const variable = `${name}_FILE`;
    const path = env[variable];
    if (path === undefined || path === "") continue;
    const mode = fileModeOf(path);
    if (mode !== null && (mode & LOOSE_BITS) !== 0) {
      loose.push({ variable, mode: mode.toString(8).padStart(4, "0") });
    }
  }
  return loose;
}

/** What the start and `config:check` say of one. */
export function looseSecretFileMessage({ variable, mode }: LooseSecretFile): string {
  return `${variable} names a file other users can read or change (mode ${mode}): chmod 600 it, or 640 for the group the service runs in`;
}
