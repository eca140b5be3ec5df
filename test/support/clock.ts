import type { Clock } from "../../src/clock";

/** A clock the test moves by hand. Starts at a minute boundary plus `offsetMs`. */
export class ManualClock implements Clock {
  private current: number;
  constructor(offsetMs = 1_000) {
    this.current = Math.floor(Date.now() / 60_000) * 60_000 + offsetMs;
  }
  now(): number {
    return this.current;
  }
  advance(ms: number): void {
    this.current += ms;
  }
}
