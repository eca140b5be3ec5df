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
   * The outcomes of `check`, decided and counted here and now without the store when that can be
   * done (a lease's permit), else undefined with nothing counted: the caller then calls `check`.
   * Only ever admits: a refusal is the store's to decide.
   */
  checkNow?(checks: readonly LimitCheck[]): LimitOutcome[] | undefined;
  /**
   * Uncounts permits in the windows they were counted in: from the current count if the stored
   * window is still that one, from the previous if it has rolled once, not at all if later. For
   * permits counted ahead and not spent (a lease's; a sign-in failure counted before the password
   * proved right). Done with the next decision, within an event-loop turn; a failure to do it
   * leaves them counted: never more than the limit, only fewer.
   */
  giveBack(permits: readonly UnusedPermits[]): void;
  /**
   * Forgets what (policy, key) has counted, as if it had never been checked: lifting a block starts
   * the violations that made it from zero.
   */
  reset(policy: Policy, key: string): Promise<void>;
  /** Deletes counters whose windows have all passed; bounded work per call. */
  prune(now: number): number;
  close(): void;
}

/** What one decision did for one policy: the windows after it, and how many permits it counted. */
export interface Grant {
  state: WindowCounts;
  granted: number;
}

/** Permits a lease counted in these windows and did not use, to be uncounted. */
export interface UnusedPermits {
  policy: Policy;
  key: string;
  windowStart: number;
  burstWindowStart: number;
  count: number;
}

/** A store a lease layer (lease.ts) can sit on: it counts permits ahead and takes them back. */
export interface LeasableStore extends LimiterStore {
  /**
   * `check`, also asking for `extra` permits after those of every check decided with it: resolves
   * with this check's outcomes and, per policy decided, the windows after the decision and how
   * many of the extra permits it counted.
   */
  checkAndLease(
    checks: readonly LimitCheck[],
    extra: number,
  ): Promise<{ outcomes: LimitOutcome[]; lease: Grant[] }>;
}
