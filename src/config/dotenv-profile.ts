/**
 * @module
 * Which dotenv files in a directory name the profile. `bun run` (so `bun run start` and
 * `bun run cli`) reads them into the environment; the executable (`dist/palisade`, the Docker image)
 * reads none, so an `APP_ENV` given only there is the development profile to `config:check` and
 * production to the executable (probe 71d F4).
 */
import { join } from "node:path";
import { readBoundedFile } from "./bounded-file";

/** The dotenv files Bun reads, whatever NODE_ENV picks among them. */
const DOTENV_FILES = [".env", ".env.development", ".env.production", ".env.test", ".env.local"];
/** A line that sets one of the profile's names (`export` and spaces allowed, as Bun reads them). */
const SETS_PROFILE = /^\s*(?:export\s+)?(APP_ENV|ENVIRONMENT)\s*=/m;
/** Far beyond a dotenv file; a bigger one is not read for this warning. */
const MAX_DOTENV_BYTES = 1024 * 1024;

/** Each dotenv file in `directory` that sets APP_ENV or ENVIRONMENT, with the name it sets. */
export function dotenvProfileSettings(directory: string): { file: string; variable: string }[] {
  const found: { file: string; variable: string }[] = [];
  for (const file of DOTENV_FILES) {
    let text: string;
    try {
      text = readBoundedFile(join(directory, file), MAX_DOTENV_BYTES);
    } catch {
      continue;
    }
    const match = SETS_PROFILE.exec(text);
    if (match) found.push({ file, variable: match[1]! });
  }
  return found;
}
