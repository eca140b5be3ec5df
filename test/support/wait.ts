/**
 * Waiting in tests without guessing a duration: poll a condition until it holds, or fail at a
 * deadline naming what was awaited. The deadline is only an upper bound for a broken run; a
 * passing run waits exactly as long as the condition takes.
 */

export interface WaitOptions {
  /** Fail after this long (default 5 s). */
  timeoutMs?: number;
  /** Between polls (default 2 ms). */
  intervalMs?: number;
  /** What is awaited, for the failure message. */
  what?: string;
}

/** Resolves with the condition's first truthy value; rejects once the deadline passes. */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  { timeoutMs = 5_000, intervalMs = 2, what = "the condition" }: WaitOptions = {},
): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value as NonNullable<T>;
    if (performance.now() >= deadline) {
      throw new Error(`waited ${timeoutMs} ms for ${what}; it did not happen`);
    }
    await Bun.sleep(intervalMs);
  }
}

/** A promise with its resolver outside: a signal one side raises and the other awaits. */
export function signal<T = void>(): { promise: Promise<T>; raise(value: T): void } {
  const { promise, resolve } = Promise.withResolvers<T>();
  return { promise, raise: resolve };
}

/**
 * Resolves after the callbacks already queued with setImmediate have run. Elysia runs a request's
 * onAfterResponse hooks (the access-log line, the request metrics) in a setImmediate it queues
 * before `handle()` resolves, so awaiting this after `handle()` awaits those hooks.
 */
export function afterQueuedImmediates(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
