/**
 * @module
 * REDIS_URL's shape, as Bun's Redis client reads it: a host, a port if any, and at most a database
 * number as the path. Anything else the client ignores (a query: `?db=2` counted in database 0, so
 * two deployments meant to be kept apart shared every limit and lockout) or throws on when the core
 * is made (`/abc`, `/1.5`: a stack trace after `config:check` had passed; probe 46c F3). Refused
 * here in one line instead; the line never quotes the URL, whose password it may carry.
 */
import { ConfigError } from "./error";

/** Redis's own bound on its `databases` setting (a C int). */
export const LARGEST_REDIS_DATABASE = 2_147_483_647;

/** The database REDIS_URL names (0 when it names none); throws a ConfigError for any other shape. */
export function redisDatabase(value: string): number {
  const url = new URL(value);
  // A non-special scheme keeps `?` and `#` in its serialisation even when empty (`/3?`), and a
  // userinfo's are percent-encoded: one in the href is a query or a fragment.
  if (/[?#]/.test(url.href)) {
    throw new ConfigError(
      "REDIS_URL",
      "must not have a query or fragment (Bun's Redis client ignores them: ?db=2 counts in database 0); name the database as the path: redis://host:6379/2",
    );
  }
  if (url.hostname === "")
    throw new ConfigError("REDIS_URL", "must name a host: redis://host:6379");
  if (url.port === "0") throw new ConfigError("REDIS_URL", "must name a port from 1 to 65535");
  const path = /^\/?(\d*)$/.exec(url.pathname);
  if (!path) {
    throw new ConfigError(
      "REDIS_URL",
      "must have no path or a database number as its path (redis://host:6379/2)",
    );
  }
  const database = path[1] === "" ? 0 : Number(path[1]);
  if (database > LARGEST_REDIS_DATABASE) {
    throw new ConfigError(
      "REDIS_URL",
      `names a database past the largest Redis has (${LARGEST_REDIS_DATABASE})`,
    );
  }
  return database;
}

/** REDIS_URL without its database: the database 0 of the same server and credentials. */
export function withoutDatabase(value: string): string {
  const url = new URL(value);
  url.pathname = "";
  return url.href;
}
