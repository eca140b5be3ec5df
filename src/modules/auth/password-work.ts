/**
 * @module
 * The argon2id work of sign-ins and registrations, bounded. Each costs ~75 ms of a core (Bun's
 * default cost), so a 2-core machine verifies ~25 passwords a second. The per-address and
 * per-account limits stop one client after a few tries, but a flood from a new address each time
 * (a new IPv6 /64 per request) met no bound: every attempt was queued, and a real sign-in waited
 * behind all of them (probe 30a F3: 49 s with 300 attempts in flight).
 *
 * So at most `concurrency` hashes run at once (a core each) and at most `queue` more wait for
 * one; past that a sign-in or registration is refused at once with 503, before any work, and is
 * no attempt: the routes give back what the rate limits charged it (PasswordWorkBusy). A real
 * user then waits at most `queue / concurrency` hashes' time, or is told to retry, instead of
 * waiting behind the whole flood. Known and unknown accounts wait alike, so the queue says nothing
 * about which exist. Refusals are counted (`auth_password_work_refused_total`).
 */
import { availableParallelism } from "node:os";
import { AppError } from "../../errors";

export interface PasswordWorkLimits {
  /** Hashes run at once. */
  concurrency: number;
  /** Hashes waiting for a slot; past them, refused. */
  queue: number;
}

/** How soon a refused sign-in may come again: it is no attempt (its limits are given back). */
export const QUEUE_RETRY_AFTER_SECONDS = 2;

/**
 * The queue's refusal. The sign-in and sign-up routes give back what the rate limits charged the
 * request for it (LimitEnforcer.refund): counted, a user retrying as told spent the minute's five
 * sign-ins, was refused 429 and then blocked (probes 30e F1, 30f F1).
 */
export class PasswordWorkBusy extends AppError {
  constructor() {
    super(
      "SERVICE_UNAVAILABLE",
      `Too many sign-ins are being checked right now; retry in ${QUEUE_RETRY_AFTER_SECONDS} s.`,
      undefined,
      { "retry-after": String(QUEUE_RETRY_AFTER_SECONDS) },
    );
  }
}

/** A slot a core, and a queue of eight hashes a core: ~0.6 s of waiting at most at Bun's cost. */
export function defaultPasswordWorkLimits(): PasswordWorkLimits {
  const cores = Math.max(1, availableParallelism());
  return { concurrency: cores, queue: 8 * cores };
}

export interface PasswordWork {
  /** Runs `work` when a slot is free; throws PasswordWorkBusy (503) at once when the queue is full. */
  run<T>(work: () => Promise<T>): Promise<T>;
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
    async run(work) {
      if (running < limits.concurrency) {
        running += 1;
      } else if (waiting.length < limits.queue) {
        // The slot is handed over by the release that frees it: `running` stays as it is.
        await new Promise<void>((resolve) => waiting.push(resolve));
      } else {
        onRefused();
        throw new PasswordWorkBusy();
      }
      try {
        return await work();
      } finally {
        release();
      }
    },
  };
}
