/**
 * @module
 * The limiter's Redis at the start: connected (waiting a moment, never long: the service starts
 * either way and the client keeps reconnecting while the limiter fails open or closed by policy),
 * then asked whether it may evict keys (redis-eviction) and whether it has the database REDIS_URL
 * names. Never throws: what it finds is logged, and an evicting Redis in production is returned as
 * the reason the start refuses.
 */
import { RedisClient } from "bun";
import type { AppEnv } from "../../config";
import { redisDatabase, withoutDatabase } from "../../config/redis-url";
import { firstLine } from "../../error-line";
import type { Logger } from "../../logging/logger";
import { type EvictionWatch, evictingPolicyMessage, SAFE_POLICY } from "./redis-eviction";
import { assertScriptsRun, assertWritable, withDeadline } from "./redis-store";

const REDIS_START_WAIT_MS = 500;

export interface RedisStart {
  redis: RedisClient;
  url: string;
  appEnv: AppEnv;
  watch: EvictionWatch;
  logger: Logger;
}

/** Resolves to the reason the start must stop, or null. */
export async function startRedisLimiter(start: RedisStart): Promise<string | null> {
  const { redis, url, appEnv, watch, logger } = start;
  const connected = redis.connect().then(
    () => true,
    () => false,
  );
  const timedOut = Bun.sleep(REDIS_START_WAIT_MS).then(() => false);
  if (!(await Promise.race([connected, timedOut]))) {
    if (await saidCredentialsRefused(url, logger)) return null;
    logger.error(
      { redis: "unreachable" },
      "redis unreachable at start; the limiter fails open or closed by policy until it is back",
    );
    return null;
  }
  let policy: string | null;
  try {
    // The first command on the connection, so a refused database is found here (below).
    policy = await withDeadline(watch.readPolicy(), REDIS_START_WAIT_MS, "CONFIG GET");
  } catch (error) {
    // Connected without credentials to a server that requires them: every command is refused.
    if (await saidCredentialsRefused(url, logger)) return null;
    const refusal = await databaseRefusal(url);
    if (refusal !== null) {
      logger.error(
        { redis: "database refused", database: redisDatabase(url), reason: refusal },
        `redis refuses the database REDIS_URL names (${refusal}): every limiter decision fails until REDIS_URL names one the server has (its databases setting)`,
      );
    } else {
      logger.error(
        { redis: "no answer", err: error },
        "redis connected but did not answer at start; the limiter fails open or closed by policy until it does",
      );
    }
    return null;
  }
  const send = (command: string, args: string[]) => redis.send(command, args);
  try {
    await withDeadline(assertScriptsRun(send), REDIS_START_WAIT_MS, "SCRIPT LOAD");
    await withDeadline(assertWritable(send), REDIS_START_WAIT_MS, "EVAL");
  } catch (error) {
    const reason = firstLine(error);
    // Every decision would fail: production refuses, as for an evicting Redis; /ready says it.
    if (appEnv === "production") return `REDIS_URL's ${reason}`;
    const replica = reason.startsWith("Redis is a read-only replica");
    const keys = reason.startsWith("Redis refuses the limiter's keys");
    logger.error(
      { redis: replica ? "read-only" : keys ? "keys refused" : "scripts refused" },
      replica || keys
        ? `${reason}; /ready answers 503 meanwhile`
        : `${reason}: every limiter decision fails (open or closed by policy) until it runs them; /ready answers 503`,
    );
  }
  // Said below: later looks tell only a change from it. The count evictions are told against from
  // now on.
  watch.policyAtStart(policy);
  await watch.lookForEvictions();
  if (policy === null || policy === SAFE_POLICY) return null;
  // Production refuses: lockouts and limits that a flood of new addresses can evict are no
  // defence, and a setting of the deployment, not a passing state. /ready reports it everywhere.
  if (appEnv === "production") return `REDIS_URL's Redis: ${evictingPolicyMessage(policy)}`;
  logger.warn(
    { redis: "evicting policy", policy },
    `redis: ${evictingPolicyMessage(policy)}; /ready answers 503 until then`,
  );
  return null;
}

/**
 * Why the server refuses REDIS_URL's database, asked with SELECT on a connection of its own: Bun's
 * client selects it on connecting, answers "Connection has failed" to every command after, and
 * never says the server's reason (`ERR DB index is out of range`).
 */
async function databaseRefusal(url: string): Promise<string | null> {
  const database = redisDatabase(url);
  if (database === 0) return null;
  const probe = new RedisClient(withoutDatabase(url), {
    enableOfflineQueue: false,
    autoReconnect: false,
    connectionTimeout: REDIS_START_WAIT_MS,
  });
  try {
    await withDeadline(
      probe.connect().then(() => probe.send("SELECT", [String(database)])),
      REDIS_START_WAIT_MS,
      "SELECT",
    );
    return null;
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    return code === "ERR_REDIS_SERVER_ERROR" && error instanceof Error ? error.message : null;
  } finally {
    probe.close();
  }
}

/** Whether the server refuses REDIS_URL's credentials: then said, with its reason. */
async function saidCredentialsRefused(url: string, logger: Logger): Promise<boolean> {
  const refused = await credentialRefusal(url);
  if (refused === null) return false;
  logger.error(
    { redis: "credentials refused", reason: refused },
    `redis refuses REDIS_URL's credentials (${refused}): every limiter decision fails until REDIS_URL carries ones the server accepts`,
  );
  return true;
}

/**
 * Why the server refuses REDIS_URL's credentials (a wrong password, none where one is required),
 * asked in Redis's own protocol over a socket of its own: Bun's client closes such a connection
 * and says only "Connection closed", so a wrong password was logged as an unreachable Redis.
 * Null when the server accepts them, or cannot be asked (unreachable, no answer in time).
 */
export async function credentialRefusal(url: string): Promise<string | null> {
  const parsed = new URL(url);
  const user = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  // As Bun's client sends them: a lone user part (`redis://secret@host`) is a password.
  const command =
    password !== ""
      ? ["AUTH", ...(user !== "" ? [user] : []), password]
      : user !== ""
        ? ["AUTH", user]
        : ["PING"];
  const request = command.map((part) => `$${Buffer.byteLength(part)}\r\n${part}\r\n`).join("");
  let answer = "";
  const sockets: { end(): void }[] = [];
  let finished = false;
  const replied = new Promise<string | null>((resolve) => {
    Bun.connect({
      hostname: parsed.hostname.replace(/^\[|\]$/g, ""),
      port: Number(parsed.port || 6379),
      tls: parsed.protocol === "rediss:",
      socket: {
        open(opened) {
          opened.write(`*${command.length}\r\n${request}`);
        },
        data(_, chunk) {
          answer += chunk.toString("latin1");
          const end = answer.indexOf("\r\n");
          if (end >= 0 || answer.length > 1024) resolve(end >= 0 ? answer.slice(0, end) : answer);
        },
        close: () => resolve(null),
        error: () => resolve(null),
        connectError: () => resolve(null),
      },
    }).then(
      (connected) => {
        // Connected after the answer or the deadline: nothing is waiting for it.
        if (finished) connected.end();
        else sockets.push(connected);
      },
      () => resolve(null),
    );
  });
  try {
    const line = await withDeadline(replied, REDIS_START_WAIT_MS, "AUTH").catch(() => null);
    if (line === null || !line.startsWith("-")) return null;
    const reason = line
      .slice(1)
      .replace(/[^\x20-\x7e]/g, "?")
      .slice(0, 200);
    // The server's words name no credential; a line that did would not be logged with it.
    return [user, password].some((part) => part.length >= 3 && reason.includes(part))
      ? "the server refused them"
      : reason;
  } finally {
    finished = true;
    for (const socket of sockets) socket.end();
  }
}
