/**
 * @module
 * Keeps the limiter's Redis client connected for as long as the service runs.
 *
 * Bun's client reconnects on its own only until its `maxRetries` run out (about half a minute);
 * then it answers "Connection has failed" to every command until `connect()` is called again. An
 * outage longer than that (a Redis restart, an upgrade, a failover) left every process limiting
 * nothing and answering sign-ins 503 until it was restarted, with `/health` still 200 (probe 80b
 * F1). So once a second, a client that is not connected is asked to connect, one attempt at a
 * time; each attempt waits at most the client's connection timeout.
 */
import type { RedisClient } from "bun";
import type { Logger } from "../../logging/logger";

/** How often a disconnected client is asked to connect again. */
export const REDIS_RECONNECT_EVERY_MS = 1000;

export interface RedisConnectionKeeper {
  /** Stops asking (the service's shutdown, before the client closes). */
  stop(): void;
}

export function keepRedisConnected(
  client: Pick<RedisClient, "connected" | "connect">,
  options: { logger: Pick<Logger, "info">; everyMs?: number },
): RedisConnectionKeeper {
  let attempting = false;
  let lost = false;
  const look = () => {
    if (attempting) return;
    if (client.connected) {
      lost = false;
      return;
    }
    attempting = true;
    lost = true;
    client.connect().then(
      () => {
        attempting = false;
        if (lost) {
          lost = false;
          options.logger.info({ redis: "reconnected" }, "redis connected again");
        }
      },
      () => {
        // Failed again: the next look tries again. The limiter's own errors say it is down.
        attempting = false;
      },
    );
  };
  const timer = setInterval(look, options.everyMs ?? REDIS_RECONNECT_EVERY_MS);
  // Never what keeps a process alive (a CLI command that built the services exits as before).
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
