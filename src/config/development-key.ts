/**
 * @module
 * The development AUDIT_SECRET_KEY. Unlike the token secrets, a key generated per run would make
 * every earlier audit row fail `audit:verify` after a restart, and the CLI (another process) could
 * never verify at all. So when development runs without AUDIT_SECRET_KEY, a generated key is kept
 * next to the database file (`<DATABASE_PATH>.audit-key`, mode 0600) and read back by every later
 * run and by the CLI. An in-memory database gets a key for the run only. Deployed profiles never
 * come here: they require the variable.
 */
import { linkSync, mkdirSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { readBoundedFile, UnreadableFile } from "./bounded-file";
import { ConfigError } from "./error";
import { generateSecret } from "./secrets";

const VARIABLE = "AUDIT_SECRET_KEY";
// A generated key is 64 characters and a line ending; a file of more was not written here.
const KEY_FILE_MAX_BYTES = 4096;

export function developmentKeyPath(databasePath: string): string | null {
  return databasePath === ":memory:" ? null : `${databasePath}.audit-key`;
}

/**
 * A development key file left beside a deployed profile's database, which keys with
 * AUDIT_SECRET_KEY: `sameKey` when that variable holds the file's key (the key then sits beside the
 * database, and beside every development backup of it, held by whoever holds them; probe 35c F3).
 * Null when there is none, or it cannot be read.
 */
export function leftoverDevelopmentKey(
  databasePath: string,
  auditSecret: string,
): { file: string; sameKey: boolean } | null {
  const file = developmentKeyPath(databasePath);
  if (file === null) return null;
  try {
    // Bounded and without blocking: a FIFO put there hung the production start with nothing said
    // (probe 82a F2).
    const key = readBoundedFile(file, KEY_FILE_MAX_BYTES);
    return { file, sameKey: key.trim() === auditSecret.trim() };
  } catch {
    return null;
  }
}

/** Reads the development key file, creating it (0600, atomically) when it does not exist. */
export function loadOrCreateDevelopmentKey(path: string): string {
  try {
    return readKey(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw asConfigError(path, error);
  }
  const temporary = `${path}.${process.pid}.${generateSecret().slice(0, 8)}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(temporary, `${generateSecret()}\n`, { mode: 0o600, flag: "wx" });
    // link() fails if another process created the file first; then its key is the one to use.
    linkSync(temporary, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw asConfigError(path, error);
  } finally {
    try {
      unlinkSync(temporary);
    } catch {}
  }
  try {
    return readKey(path);
  } catch (error) {
    throw asConfigError(path, error);
  }
}

function readKey(path: string): string {
  const mode = statSync(path).mode;
  if (mode & 0o077) {
    throw new ConfigError(
      VARIABLE,
      `is not set and the development key file ${path} is readable by other users (chmod 600 it)`,
    );
  }
  const key = readBoundedFile(path, KEY_FILE_MAX_BYTES).trim();
  if (key === "") {
    throw new ConfigError(VARIABLE, `is not set and the development key file ${path} is empty`);
  }
  return key;
}

function asConfigError(path: string, error: unknown): ConfigError {
  if (error instanceof ConfigError) return error;
  const reason =
    error instanceof UnreadableFile
      ? error.reason
      : ((error as NodeJS.ErrnoException).code ?? "unusable");
  return new ConfigError(
    VARIABLE,
    `is not set and the development key file ${path} cannot be used (${reason})`,
  );
}
