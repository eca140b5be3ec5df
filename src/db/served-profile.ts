/**
 * @module
 * Which profile served a database file last. A start writes it once it is listening; an operator
 * command run with no `APP_ENV` reads it before its configuration is read (which in development
 * makes an audit key beside the file): a command on a file a production service serves would
 * otherwise apply the development profile's rules, an 8-character admin password or a test-mode
 * key, and say nothing (probe 86d F3). Not sealed: someone who can write the file can make it say
 * `development`, which only gives back the behaviour from before it existed.
 */
import type { Database } from "bun:sqlite";
import type { AppEnv } from "../config";
import { BUSY_TIMEOUT_MS } from "./client";
import { withALook } from "./file-look";

export function recordServedProfile(sqlite: Database, profile: AppEnv, now: number): void {
  sqlite
    .query(
      `INSERT INTO served_profile (id, profile, served_at) VALUES (1, ?1, ?2)
       ON CONFLICT (id) DO UPDATE SET profile = excluded.profile, served_at = excluded.served_at`,
    )
    .run(profile, now);
}

/**
 * The profile that served the file at `path` last (a look: read-only, nothing written), or null
 * when none is recorded, the file holds no such table (an older release's) or cannot be read.
 */
export function servedProfileOf(path: string): string | null {
  try {
    return withALook(path, BUSY_TIMEOUT_MS, (look) => {
      const row = look
        .query<{ profile: unknown }, []>("SELECT profile FROM served_profile WHERE id = 1")
        .get();
      return typeof row?.profile === "string" ? row.profile : null;
    });
  } catch {
    // Locked past the wait: the command's own open says so.
    return null;
  }
}
