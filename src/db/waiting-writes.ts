/**
 * @module
 * Writes that follow what already happened and must not be lost to another connection's write
 * lock (a backup, a CLI command, another process): a refund's record or the end of its claim, an
 * intent's Idempotency-Key claim given back after Stripe answered, a WhatsApp message's claim given
 * back after its delivery failed. Turned into a 503 "database busy", such a write would hide what
 * Stripe answered and leave its claim held for the whole lease (probes 19b, 43a F1, F2). A
 * write that meets the lock is tried again every `retryMs`, the event loop running in between,
 * until the lock goes; one write waits per id, and `settle(id)` tries it once more before anything
 * that must come after it.
 */
import { isDatabaseBusy } from "./busy";

/**
 * The longest a stop waits for another connection's lock to make what waits for it (`drain`), as
 * the WhatsApp outbox waits out a lock for a send in flight.
 */
export const STOP_LOCK_WAIT_MS = 30_000;

/** What a waiting write says, and when. */
export interface WaitingWriteReport {
  /** The lock was held: the write waits for it. */
  waiting(): void;
  /** Written after waiting. */
  written(): void;
  /** Failed for another reason than the lock (a full disk, an I/O error): not tried again. */
  failed(error: unknown): void;
}

export class WaitingWrites {
  private readonly waiting = new Map<string, () => boolean>();

  constructor(private readonly retryMs: number) {}

  /** Writes now, or waits for the lock; whether it was written now. */
  run(id: string, write: () => void, report: WaitingWriteReport): boolean {
    try {
      write();
      return true;
    } catch (error) {
      if (!isDatabaseBusy(error)) {
        report.failed(error);
        return false;
      }
    }
    report.waiting();
    const attempt = () => {
      try {
        write();
        report.written();
      } catch (error) {
        if (isDatabaseBusy(error)) return false;
        report.failed(error);
      }
      this.waiting.delete(id);
      return true;
    };
    this.waiting.set(id, attempt);
    const retry = () => {
      if (this.waiting.get(id) === attempt && !attempt()) {
        setTimeout(retry, this.retryMs).unref?.();
      }
    };
    setTimeout(retry, this.retryMs).unref?.();
    return false;
  }

  /** The ids whose write still waits for the lock. */
  pending(): string[] {
    return [...this.waiting.keys()];
  }

  /** Tries the write waiting for `id`, if any, once more; whether none waits any more. */
  settle(id: string): boolean {
    const attempt = this.waiting.get(id);
    return attempt === undefined || attempt();
  }

  /**
   * At a stop: tries every waiting write, every `retryMs`, until none waits or `maxWaitMs` has
   * passed; the ids still waiting then. Their timers would not keep the process alive, and the
   * database is closed next: without this a write waiting at the stop was dropped without a word
   * (probe 44b F1).
   */
  async drain(maxWaitMs: number): Promise<string[]> {
    const until = performance.now() + maxWaitMs;
    for (;;) {
      for (const id of [...this.waiting.keys()]) this.settle(id);
      if (this.waiting.size === 0 || performance.now() >= until) return this.pending();
      await Bun.sleep(this.retryMs);
    }
  }
}
