/**
 * @module
 * The argon2id work of sign-ins and registrations, bounded. Each costs ~75 ms of a core (Bun's
 * default cost), so a 2-core machine verifies ~25 passwords a second. The per-address and
 * per-account limits stop one client after a few tries, but a flood from a new address each time
 * (a new IPv6 /64 per request) met no bound: every attempt was queued, and a real sign-in waited
 * behind all of them (probe 30a F3: 49 s with 300 attempts in flight).
 *
 * So at most `concurrency` hashes run at once (a core each) and at most `queue` more wait for
 * one; past that a sign-in or registration is refused at once with 503, before any work, and a
 * `Retry-After` that keeps retries within the sign-in limits (retryAfterWithin). A real user then waits at most `queue / concurrency` hashes' time, or is told
 * to retry, instead of waiting behind the whole flood. Known and unknown accounts wait alike, so
 * the queue says nothing about which exist. Refusals are counted
 * (`auth_password_work_refused_total`).
 */
import { availableParallelism } from "node:os";
import { AppError } from "../../errors";

export interface PasswordWorkLimits {
  /** Hashes run at once. */
  concurrency: number;
  /** Hashes waiting for a slot; past them, refused. */
  queue: number;
}

/**
 * The Retry-After of a refusal: the spacing at which retries stay within the sign-up and sign-in
 * limits (a refused attempt was counted against them before it reached the queue). Told to retry
 * in a second, a user retrying as told spent the minute's five sign-ins in five seconds, was then
 * refused 429, and after five of those was blocked (probe 30e F1).
 */
export function retryAfterWithin(perMinute: number): number {
  return Math.max(1, Math.ceil(60 / Math.max(1, perMinute)));
}

/** A slot a core, and a queue of eight hashes a core: ~0.6 s of waiting at most at Bun's cost. */
export function defaultPasswordWorkLimits(): PasswordWorkLimits {
  const cores = Math.max(1, availableParallelism());
  return { concurrency: cores, queue: 8 * cores };
}

export interface PasswordWork {
  /**
   * Runs `work` when a slot is free; throws SERVICE_UNAVAILABLE at once when the queue is full,
   * saying to retry in `retryAfterSeconds`.
   */
  run<T>(work: () => Promise<T>, retryAfterSeconds?: number): Promise<T>;
}

export function createPasswordWork(
  limits: PasswordWorkLimits,
  onRefused: () => void = () => {},
): PasswordWork {
  let running = 0;
  const waiting: (() => void)[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else running -= 1;
  };
  return {
    async run(work, retryAfterSeconds = 1) {
      if (running < limits.concurrency) {
        running += 1;
      } else if (waiting.length < limits.queue) {
        // The slot is handed over by the release that frees it: `running` stays as it is.
        await new Promise<void>((resolve) => waiting.push(resolve));
      } else {
        onRefused();
        throw new AppError(
          "SERVICE_UNAVAILABLE",
          `Too many sign-ins are being checked right now; retry in ${retryAfterSeconds} s.`,
          undefined,
          { "retry-after": String(retryAfterSeconds) },
        );
      }
      try {
        return await work();
      } finally {
        release();
      }
    },
  };
}
