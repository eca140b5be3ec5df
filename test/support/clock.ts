import type { Clock } from "../../src/clock";

/**
 * A clock the test moves by hand. Starts `offsetMs` after a multiple of `alignMs` (a minute), so a
 * test's requests fall in the fixed windows it expects, whatever the wall-clock time.
 */
export class ManualClock implements Clock {
  private current: number;
  constructor(offsetMs = 1_000, alignMs = 60_000) {
    this.current = Math.floor(Date.now() / alignMs) * alignMs + offsetMs;
  }
  now(): number {
    return this.current;
  }
  advance(ms: number): void {
    this.current += ms;
  }
}
