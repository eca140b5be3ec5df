/**
 * @module
 * Secret files other users can read or change. A `NAME_FILE` written under the usual umask
 * (`openssl rand … > file` makes it 0644) lets every local user read the secret (probe 30d F8), as
 * a database file made that way did before the start said so; one owned by another user, or kept
 * in a directory others can write, lets that user put in a value of their choosing (probe 31b F4).
 * The start and `config:check` say each, naming the variable and what is wrong, never the value;
 * the file is read all the same (a refusal would stop deployments that work). A group may read it
 * (0640 for the group the service runs in is how a secret is shared with it), and root may own it.
 */
import { realpathSync, statSync } from "node:fs";
import { dirname } from "node:path";
import type { Environment } from "./env-source";
import { SECRET_VARIABLES } from "./variables";

/** A `NAME_FILE` whose file other users can read or change, and how. */
export interface LooseSecretFile {
  variable: string;
  problem: "mode" | "owner" | "directory";
  /** The file's permission bits (`mode`), its owner's uid (`owner`), or the directory and why. */
  detail: string;
}

/** Owner and permission bits of `path` (following links, as reading it does); null when unknown. */
export type StatOf = (path: string) => { mode: number; uid: number } | null;

const statOf: StatOf = (path) => {
  try {
    const stat = statSync(path);
    return { mode: stat.mode & 0o7777, uid: stat.uid };
  } catch {
    return null;
  }
};

const realpathOf = (path: string): string | null => {
  try {
    return realpathSync(path);
  } catch {
    return null;
  }
};

/** Other users can read or write it, or its group can write it. */
const LOOSE_FILE_BITS = 0o027;
/** Its group or other users can add, remove and rename entries (unless the sticky bit stops them). */
const LOOSE_DIRECTORY_BITS = 0o022;
const STICKY = 0o1000;

const octal = (mode: number) => mode.toString(8).padStart(4, "0");

export function looseSecretFiles(
  env: Environment,
  stat: StatOf = statOf,
  ownUid: number | null = process.getuid?.() ?? null,
  realpath: (path: string) => string | null = realpathOf,
): LooseSecretFile[] {
  const loose: LooseSecretFile[] = [];
  for (const name of SECRET_VARIABLES) {
    const variable = `${name}_FILE`;
    const path = env[variable];
    if (path === undefined || path === "") continue;
    const file = stat(path);
    if (file === null) continue;
    if ((file.mode & LOOSE_FILE_BITS) !== 0) {
      loose.push({ variable, problem: "mode", detail: octal(file.mode) });
    }
    if (ownUid !== null && file.uid !== ownUid && file.uid !== 0) {
      loose.push({ variable, problem: "owner", detail: `uid ${file.uid}` });
    }
    const directory = looseDirectory([path, realpath(path) ?? path], stat, ownUid);
    if (directory !== null) loose.push({ variable, problem: "directory", detail: directory });
  }
  return loose;
}

/**
 * The first directory on the way to a file (as named, and where its links lead) that someone else
 * can change: whoever can replace any directory on the path can put their own file at its end
 * (probe 31c F3). Group or others may write it without the sticky bit, or another user than this
 * one (or root) owns it. Said as the directory and why; null when there is none.
 */
function looseDirectory(
  paths: readonly string[],
  stat: StatOf,
  ownUid: number | null,
): string | null {
  const seen = new Set<string>();
  for (const path of paths) {
    let directory = dirname(path);
    while (!seen.has(directory)) {
      seen.add(directory);
      const entry = stat(directory);
      if (entry !== null) {
        if ((entry.mode & LOOSE_DIRECTORY_BITS) !== 0 && (entry.mode & STICKY) === 0) {
          return `${directory}, mode ${octal(entry.mode)}`;
        }
        if (ownUid !== null && entry.uid !== ownUid && entry.uid !== 0) {
          return `${directory}, owned by uid ${entry.uid}`;
        }
      }
      const up = dirname(directory);
      if (up === directory) break;
      directory = up;
    }
  }
  return null;
}

/** What the start and `config:check` say of one. */
export function looseSecretFileMessage({ variable, problem, detail }: LooseSecretFile): string {
  switch (problem) {
    case "mode":
      return `${variable} names a file other users can read or change (mode ${detail}): chmod 600 it, or 640 for the group the service runs in`;
    case "owner":
      return `${variable} names a file another user owns (${detail}), who can put any value in it: chown it to the user the service runs as, or to root`;
    case "directory":
      return `${variable} names a file on a path other users can change (${detail}), who can put another file in its place: keep it where only you or root can write every directory above it`;
  }
}
