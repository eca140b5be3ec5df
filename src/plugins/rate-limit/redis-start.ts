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
import type { Logger } from "../../logging/logger";
import { type EvictionWatch, evictingPolicyMessage, SAFE_POLICY } from "./redis-eviction";
import { withDeadline } from "./redis-store";

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
