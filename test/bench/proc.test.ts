import { describe, expect, test } from "bun:test";
import { coreTimesUs, cpuTimeUs, interference, parseCoreTimes } from "../../bench/proc";

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

describe("bench: other work on the measured cores, from /proc/stat", () => {
  // Two cores' lines as Linux writes them: user nice system idle iowait irq softirq steal guest guest_nice.
  const stat = [
    "cpu  300 10 100 9000 50 5 5 40 0 0",
    "cpu0 100 0 50 4500 20 2 3 10 0 0",
    "cpu1 200 10 50 4500 30 3 2 30 0 0",
    "cpu2 999 999 999 1 1 1 1 999 0 0",
    "intr 12345 0 0",
    "ctxt 67890",
  ].join("\n");

  test("counts user, nice and system as busy, steal apart, idle, iowait and interrupts not at all", () => {
    // cpu0: 100 + 0 + 50 = 150 ticks busy, 10 stolen; cpu1: 200 + 10 + 50 = 260, 30.
    expect(parseCoreTimes(stat, [0])).toEqual({ busyUs: 1_500_000, stealUs: 100_000 });
    expect(parseCoreTimes(stat, [0, 1])).toEqual({ busyUs: 4_100_000, stealUs: 400_000 });
    // No core named: the first line, every core's sum (not the sum of the lines after it).
    expect(parseCoreTimes(stat, null)).toEqual({ busyUs: 4_100_000, stealUs: 400_000 });
    expect(parseCoreTimes(stat, [7])).toEqual({ busyUs: 0, stealUs: 0 });
  });

  test("what the cores did beyond the server and wrk, and what was stolen, as shares of a core", () => {
    const before = { busyUs: 1_000_000, stealUs: 50_000 };
    const after = { busyUs: 2_400_000, stealUs: 150_000 };
    // 1.4 s busy in a 1 s run on two cores, 1.2 s of it the server's and wrk's: 0.2 of a core other.
    const shares = interference(before, after, 1_200_000, 1_000_000);
    expect(shares.otherShare).toBeCloseTo(0.2, 10);
    expect(shares.stealShare).toBeCloseTo(0.1, 10);
    // Ticks are 10 ms: own time read finer than the cores' can exceed it; never a negative share.
    expect(interference(before, after, 1_500_000, 1_000_000).otherShare).toBe(0);
  });

  test("this machine's reading grows while this process spins on the cores it counts", () => {
    const before = coreTimesUs(null);
    expect(before).not.toBeNull();
    const started = performance.now();
    let grown = 0;
    while (grown < 100_000 && performance.now() - started < 10_000) {
      for (let i = 0; i < 100_000; i++) grown += 0;
      grown = coreTimesUs(null)!.busyUs - before!.busyUs;
    }
    expect(grown).toBeGreaterThanOrEqual(100_000);
  });
});
