/**
 * @module
 * Whether the limiter's Redis may evict its keys. Every limiter key carries a TTL, so under any
 * `maxmemory-policy` but `noeviction` (`allkeys-*` and `volatile-*` alike: the default of several
 * managed offerings, or a Redis shared with a cache) a flood of cheap requests from new addresses
 * fills `maxmemory` and Redis drops the oldest keys: account lockouts, per-account sign-in counts,
 * violation counts. A locked account's right password then signed in while `/ready` stayed 200 and
 * nothing was logged (probe 46c F2).
 *
 * The policy is read with `CONFIG GET`, or from `INFO memory` where CONFIG is renamed or forbidden
 * (managed Redis often does that; said once), at the start and by every readiness check (the
 * policy can be changed while running); `INFO stats`'s `evicted_keys` is looked at by the
 * maintenance, and a rise is logged once per look.
 */
import type { Logger } from "../../logging/logger";

/** One command to the limiter's Redis (Bun's `RedisClient.send`). */
export type RedisSend = (command: string, args: string[]) => Promise<unknown>;

export const SAFE_POLICY = "noeviction";

export interface EvictionWatch {
  /** The policy, or null when neither CONFIG nor INFO tells it; rejects when Redis does not answer. */
  readPolicy(): Promise<string | null>;
  /** The readiness check: rejects, with the reason, while the policy lets Redis evict. */
  checkReady(): Promise<void>;
  /** Logs the keys evicted since the last look (the first look only notes the count). */
  lookForEvictions(): Promise<void>;
  /** The policy the start read and reported itself: later looks tell only a change from it. */
  policyAtStart(policy: string | null): void;
}

export function evictingPolicyMessage(policy: string): string {
  return `maxmemory-policy is ${policy}: Redis may evict lockouts, sign-in counts and limits (set maxmemory-policy noeviction on the limiter's Redis)`;
}

export function createEvictionWatch({
  send,
  logger,
}: {
  send: RedisSend;
  logger: Logger;
}): EvictionWatch {
  let configRefused = false;
  let unreadSaid = false;
  let lastEvicted: number | null = null;
  /** The policy last read; undefined before the first read (Redis down at the start). */
  let seenPolicy: string | null | undefined;

  /**
   * Tells a policy that became one that evicts, once, and its return to noeviction: one set while
   * the service runs (`CONFIG SET`, a restart with another configuration, or a Redis that was down
   * at the start) was said only in `/ready`'s body, and a production start would have refused it
   * (probe 47b F3).
   */
  const observed = (policy: string | null) => {
    const before = seenPolicy;
    seenPolicy = policy;
    if (policy === null || policy === before) return;
    if (policy !== SAFE_POLICY) {
      logger.error(
        { redis: "evicting policy", policy },
        `redis: ${evictingPolicyMessage(policy)}; /ready answers 503 until then`,
      );
    } else if (before !== undefined && before !== null) {
      logger.info({ redis: "noeviction", before }, "redis: maxmemory-policy is noeviction again");
    }
  };

  const readPolicy = async (): Promise<string | null> => {
    if (!configRefused) {
      try {
        const reply = await send("CONFIG", ["GET", "maxmemory-policy"]);
        const policy = configValue(reply, "maxmemory-policy");
        if (policy !== null) return policy;
      } catch (error) {
        if (!refusedByServer(error)) throw error;
      }
      // Renamed, forbidden by an ACL, or a reply without the setting: INFO from now on.
      configRefused = true;
    }
    let policy: string | null = null;
    try {
      policy = infoField(String(await send("INFO", ["memory"])), "maxmemory_policy");
    } catch (error) {
      if (!refusedByServer(error)) throw error;
    }
    if (policy === null && !unreadSaid) {
      unreadSaid = true;
      logger.warn(
        { redis: "maxmemory-policy unknown" },
        "redis: maxmemory-policy could not be read (CONFIG and INFO refused): make sure the limiter's Redis runs noeviction, or an evicting policy drops lockouts and limits under memory pressure",
      );
    }
    return policy;
  };

  return {
    readPolicy,
    async checkReady() {
      const policy = await readPolicy();
      observed(policy);
      if (policy !== null && policy !== SAFE_POLICY) throw new Error(evictingPolicyMessage(policy));
    },
    policyAtStart(policy) {
      seenPolicy = policy;
    },
    async lookForEvictions() {
      let evicted: number | null;
      try {
        observed(await readPolicy());
        evicted = Number(infoField(String(await send("INFO", ["stats"])), "evicted_keys"));
      } catch {
        return; // Redis not answering: the limiter and /ready say so.
      }
      if (!Number.isSafeInteger(evicted)) return;
      // A count lower than the last (CONFIG RESETSTAT, a restart) starts again from it.
      if (lastEvicted !== null && evicted > lastEvicted) {
        logger.error(
          { redis: "evicted keys", evictedKeys: evicted - lastEvicted, evictedTotal: evicted },
          `redis evicted ${evicted - lastEvicted} keys since the last look: lockouts, sign-in counts and limits may be among them (set maxmemory-policy noeviction on the limiter's Redis)`,
        );
      }
      lastEvicted = evicted;
    },
  };
}

/** A refusal by the server (unknown command, NOPERM), as against a connection that failed. */
function refusedByServer(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "ERR_REDIS_SERVER_ERROR";
}

/** `CONFIG GET`'s reply (a map under RESP3, a flat list under RESP2). */
function configValue(reply: unknown, name: string): string | null {
  if (Array.isArray(reply)) {
    const at = reply.indexOf(name);
    return at >= 0 && typeof reply[at + 1] === "string" ? reply[at + 1] : null;
  }
  const value = (reply as Record<string, unknown> | null)?.[name];
  return typeof value === "string" ? value : null;
}

function infoField(info: string, field: string): string | null {
  const line = info.split(/\r?\n/).find((each) => each.startsWith(`${field}:`));
  return line === undefined ? null : line.slice(field.length + 1).trim();
}
