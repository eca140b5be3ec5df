/**
 * The circuit breaker on its own, with a hand-moved clock: the transitions, the single trial, and
 * the permits that must not settle anything (released trials, calls from an earlier state).
 */
import { describe, expect, test } from "bun:test";
import {
  CircuitBreaker,
  type CircuitDecision,
  type CircuitPermit,
  type CircuitState,
} from "../../../src/modules/chat/providers/circuit-breaker";
import { ManualClock } from "../../support/clock";

function permitOf(decision: CircuitDecision): CircuitPermit {
  if (decision.kind !== "allowed") throw new Error(`expected a permit, was ${decision.kind}`);
  return decision.permit;
}

function setup() {
  const clock = new ManualClock();
  const changes: [CircuitState, CircuitState][] = [];
  const breaker = new CircuitBreaker({
    clock,
    onStateChange: (state, previous) => changes.push([state, previous]),
  });
  const fail = (times: number) => {
    for (let i = 0; i < times; i++) permitOf(breaker.acquire()).failure();
  };
  return { clock, breaker, changes, fail };
}

describe("circuit breaker", () => {
  test("a few callers' failures never open it, however many; a third caller's failure in the streak does; a success starts a new streak (probes 87a F3, 87c F1)", () => {
    const { breaker } = setup();
    for (let i = 0; i < 20; i++) permitOf(breaker.acquire("user:a")).failure();
    for (let i = 0; i < 20; i++) permitOf(breaker.acquire("user:b")).failure();
    expect(breaker.state).toBe("closed");
    permitOf(breaker.acquire("user:c")).failure();
    expect(breaker.state).toBe("open");

    const other = setup();
    permitOf(other.breaker.acquire("user:b")).failure();
    permitOf(other.breaker.acquire("user:c")).failure();
    permitOf(other.breaker.acquire("user:a")).success();
    for (let i = 0; i < 10; i++) permitOf(other.breaker.acquire("user:a")).failure();
    permitOf(other.breaker.acquire("user:b")).failure();
    expect(other.breaker.state).toBe("closed");
    permitOf(other.breaker.acquire("user:c")).failure();
    expect(other.breaker.state).toBe("open");
  });

  test("callers failing the trials in turn do not hold it open: each is refused another trial for a period and it stays half-open, until the trials of three callers have failed (probes 87c F1, 87e F1)", () => {
    const { breaker, clock } = setup();
    const openByOutage = () => {
      for (const caller of ["user:a", "user:b", "user:c", "user:a", "user:b"]) {
        permitOf(breaker.acquire(caller)).failure();
      }
      expect(breaker.state).toBe("open");
      clock.advance(30_000);
    };
    openByOutage();
    permitOf(breaker.acquire("user:x")).failure();
    expect(breaker.state).toBe("half_open");
    expect(breaker.acquire("user:x")).toEqual({ kind: "refused", retryAfterSeconds: 30 });
    permitOf(breaker.acquire("user:y")).failure();
    expect(breaker.state).toBe("half_open");
    expect(breaker.acquire("user:y")).toEqual({ kind: "refused", retryAfterSeconds: 30 });
    // x and y taking turns: still half-open, and anyone else's trial closes it.
    clock.advance(30_000);
    permitOf(breaker.acquire("user:x")).failure();
    expect(breaker.state).toBe("half_open");
    permitOf(breaker.acquire("user:z")).success();
    expect(breaker.state).toBe("closed");
    // An outage: the trials of three callers fail, and it reopens.
    openByOutage();
    permitOf(breaker.acquire("user:x")).failure();
    permitOf(breaker.acquire("user:y")).failure();
    expect(breaker.state).toBe("half_open");
    permitOf(breaker.acquire("user:z")).failure();
    expect(breaker.state).toBe("open");
    // Each opening asks for three callers' failed trials anew: one caller's does not reopen it
    // (probe 88a F1: after an outage one account's trial at each half-open held it open for good).
    clock.advance(30_000);
    permitOf(breaker.acquire("user:w")).failure();
    expect(breaker.state).toBe("half_open");
    permitOf(breaker.acquire("user:v")).success();
    expect(breaker.state).toBe("closed");
    // The outage goes on: three callers' trials fail again, and it reopens again.
    openByOutage();
    for (const caller of ["user:p", "user:q", "user:r"]) {
      permitOf(breaker.acquire(caller)).failure();
    }
    expect(breaker.state).toBe("open");
  });

  test("stays closed through four failures and opens on the fifth consecutive one", () => {
    const { breaker, changes, fail } = setup();
    fail(4);
    expect(breaker.state).toBe("closed");
    fail(1);
    expect(breaker.state).toBe("open");
    expect(breaker.acquire()).toEqual({ kind: "refused", retryAfterSeconds: 30 });
    expect(changes).toEqual([["open", "closed"]]);
  });

  test("counts down the refusal's Retry-After and lets one trial through after 30 s", () => {
    const { clock, breaker, fail } = setup();
    fail(5);
    clock.advance(12_500);
    expect(breaker.acquire()).toEqual({ kind: "refused", retryAfterSeconds: 18 });
    clock.advance(17_500);
    expect(breaker.state).toBe("half_open");
    const trial = permitOf(breaker.acquire());
    expect(breaker.acquire()).toEqual({ kind: "refused", retryAfterSeconds: 1 });
    trial.success();
    expect(breaker.state).toBe("closed");
    expect(breaker.acquire().kind).toBe("allowed");
  });

  test("a failed trial opens it for another full 30 s", () => {
    const { clock, breaker, changes, fail } = setup();
    fail(5);
    clock.advance(30_000);
    permitOf(breaker.acquire()).failure();
    expect(breaker.acquire()).toEqual({ kind: "refused", retryAfterSeconds: 30 });
    clock.advance(29_999);
    expect(breaker.acquire().kind).toBe("refused");
    clock.advance(1);
    expect(breaker.acquire().kind).toBe("allowed");
    expect(changes.map(([state]) => state)).toEqual(["open", "half_open", "open", "half_open"]);
  });

  test("a released trial (the caller went away) frees the slot without a verdict", () => {
    const { clock, breaker, fail } = setup();
    fail(5);
    clock.advance(30_000);
    permitOf(breaker.acquire()).release();
    expect(breaker.state).toBe("half_open");
    const second = permitOf(breaker.acquire());
    second.success();
    expect(breaker.state).toBe("closed");
  });

  test("a permit settles once, and one from before the circuit opened settles nothing", () => {
    const { clock, breaker, fail } = setup();
    const slow = permitOf(breaker.acquire());
    fail(5);
    // A success that started before the outage does not close a circuit it never tested.
    slow.success();
    expect(breaker.state).toBe("open");
    clock.advance(30_000);
    const trial = permitOf(breaker.acquire());
    trial.failure();
    trial.success();
    expect(breaker.state).toBe("open");
  });

  test("a success resets the consecutive count; releases count for nothing", () => {
    const { breaker, fail } = setup();
    fail(4);
    permitOf(breaker.acquire()).success();
    fail(4);
    for (let i = 0; i < 10; i++) permitOf(breaker.acquire()).release();
    expect(breaker.state).toBe("closed");
    fail(1);
    expect(breaker.state).toBe("open");
  });
});
