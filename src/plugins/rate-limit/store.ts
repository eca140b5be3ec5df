/**
 * @module
 * What a limiter store does: for each check, atomically decide and count. Implementations: SQLite
 * (one file shared by the processes of one VM) and Redis (several VMs).
 */
import type { Policy } from "./policies";

export interface LimitCheck {
  policy: Policy;
  key: string;
  now: number;
}

export interface WindowCounts {
  windowStart: number;
  previous: number;
  current: number;
  burstWindowStart: number;
  burstPrevious: number;
  burstCurrent: number;
}

export interface LimitOutcome extends WindowCounts {
  admitted: boolean;
}

export interface LimiterStore {
  /**
   * Decides each check in order and counts the admitted ones. Rejects (the promise) only when the
   * store itself failed; a refusal is an outcome with `admitted: false`.
   */
  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]>;
  /**
   * The estimated count in the long window for (policy, key) now, without counting anything: for
   * decisions that depend on what happened (a lockout after failures), not on this request.
   */
  peek(policy: Policy, key: string, now: number): Promise<number>;
  /** Deletes counters whose windows have all passed; bounded work per call. */
  prune(now: number): number;
  close(): void;
}
