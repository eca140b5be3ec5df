/**
 * @module
 * What both limiter stores do around their one atomic decision: queue the checks of one
 * event-loop turn, group those asking the same policies for the same key (one decision asks for
 * that many permits), share the decision's grants out in arrival order, and read a stored window
 * back as an estimate.
 */
import { estimate, windowStartOf } from "./sliding-window";
import type { LimitCheck, LimitOutcome, WindowCounts } from "./store";

export interface PendingCheck {
  checks: readonly LimitCheck[];
  resolve(outcomes: LimitOutcome[]): void;
  reject(error: unknown): void;
}

/** One decision: the windows after it, and how many of the wanted permits it granted. */
export interface Grant {
  state: WindowCounts;
  granted: number;
}

/**
 * Collects checks and runs them, once per event-loop turn (setImmediate), as groups of pending
 * checks with the same policies and keys, in arrival order.
 */
export class CheckQueue {
  private pending: PendingCheck[] = [];
  private scheduled = false;

  constructor(private readonly run: (groups: PendingCheck[][]) => void) {}

  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    return new Promise((resolve, reject) => {
      this.pending.push({ checks, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Runs what is queued now (at close, so nothing is left waiting). */
  flush(): void {
    const batch = this.pending;
    this.pending = [];
    this.scheduled = false;
    if (batch.length === 0) return;
    const groups = new Map<string, PendingCheck[]>();
    for (const entry of batch) {
      const signature = entry.checks.map((c) => `${c.policy.id}\u0000${c.key}`).join("\u0001");
      const group = groups.get(signature);
      if (group) group.push(entry);
      else groups.set(signature, [entry]);
    }
    this.run([...groups.values()]);
  }
}

/** Hands each check of a group its outcomes, or the store's failure. */
export function settle(group: readonly PendingCheck[], outcomes: LimitOutcome[][]): void {
  for (let i = 0; i < group.length; i++) group[i]!.resolve(outcomes[i]!);
}

export function fail(group: readonly PendingCheck[], error: unknown): void {
  for (const entry of group) entry.reject(error);
}

/** The latest arrival's clock: a group is decided after all of its checks arrived. */
export function latestNow(group: readonly PendingCheck[]): number {
  let now = 0;
  for (const entry of group) for (const check of entry.checks) now = Math.max(now, check.now);
  return now;
}

/**
 * Turns a group's decisions into each check's outcomes. The first policy is asked for one permit
 * per check; each later one for what the one before granted; a check stops at the first policy
 * that did not grant its permit, so a refused request is not counted by the policies after it.
 * `decide` is called in policy order and may return nothing once nothing is wanted.
 */
export function shareGrants(
  groupSize: number,
  policies: number,
  decide: (index: number, wanted: number) => Grant | undefined,
): LimitOutcome[][] {
  const outcomes: LimitOutcome[][] = Array.from({ length: groupSize }, () => []);
  let wanted = groupSize;
  for (let index = 0; index < policies && wanted > 0; index++) {
    const grant = decide(index, wanted);
    if (grant === undefined) break;
    for (let j = 0; j < wanted; j++)
      outcomes[j]!.push({ ...grant.state, admitted: j < grant.granted });
    wanted = grant.granted;
  }
  return outcomes;
}

/** The estimated count now of a stored long window (its start and counts), rolled forward. */
export function estimateStored(
  stored: { windowStart: number; previous: number; current: number } | null,
  now: number,
  windowMs: number,
): number {
  if (stored === null) return 0;
  const start = windowStartOf(now, windowMs);
  const state =
    stored.windowStart === start
      ? { previous: stored.previous, current: stored.current, windowStart: start }
      : stored.windowStart === start - windowMs
        ? { previous: stored.current, current: 0, windowStart: start }
        : { previous: 0, current: 0, windowStart: start };
  return estimate(state, now, windowMs);
}
