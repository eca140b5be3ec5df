/**
 * @module
 * What a process does when the Redis limiter finds keys decided more than a window ahead of its
 * clock: only VMs whose clocks are a window or more apart (a minute for the per-minute limits) make
 * such keys, and each is then started afresh, so the limits the VMs share are not kept. Nothing else shows it: each key is counted, and the first at most once a
 * minute is logged.
 */
import type { Clock } from "../../clock";
import type { Logger } from "../../logging/logger";
import type { RateLimitMetrics } from "./metrics";

const LOG_EVERY_MS = 60_000;

export function clockSkewReporter(
  metrics: RateLimitMetrics,
  logger: Logger,
  clock: Clock,
): (keys: number) => void {
  let loggedAt = Number.NEGATIVE_INFINITY;
  return (keys) => {
    metrics.clockSkew.inc(keys);
    const now = clock.now();
    if (now - loggedAt < LOG_EVERY_MS) return;
    loggedAt = now;
    logger.warn(
      { keys },
      "rate-limit keys in Redis were counted two or more windows ahead of this VM's clock and started afresh: the VMs' clocks are a window (a minute) or more apart, and the limits they share are not kept (check NTP: timedatectl, chronyc tracking)",
    );
  };
}
