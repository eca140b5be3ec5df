import { describe, expect, test } from "bun:test";
import { cpuTimeUs } from "../../bench/proc";

describe("bench: a server's CPU time from /proc", () => {
  test("grows as this process burns CPU, and is null for a process that is gone", async () => {
    const before = cpuTimeUs(process.pid);
    expect(before).not.toBeNull();
    // Spin until /proc (10 ms ticks) shows 100 ms more, or give up after 10 s of wall time: on a
    // busy machine the spin may get less than its wall time, never nothing.
    const started = performance.now();
    let grown = 0;
    while (grown < 100_000 && performance.now() - started < 10_000) {
      for (let i = 0; i < 100_000; i++) grown += 0;
      grown = cpuTimeUs(process.pid)! - before!;
    }
    expect(grown).toBeGreaterThanOrEqual(100_000);
    // Not more CPU than the wall time passed on every core (it is microseconds, not ticks).
    expect(grown).toBeLessThan(
      (performance.now() - started) * 1000 * navigator.hardwareConcurrency + 20_000,
    );

    const child = Bun.spawn(["true"]);
    await child.exited;
    expect(cpuTimeUs(child.pid)).toBeNull();
  });
});
