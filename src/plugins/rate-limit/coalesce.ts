/**
 * @module
 * What both limiter stores do around their one atomic decision: queue the checks of one
 * event-loop turn, group those asking the same policies for the same key (one decision asks for
 * that many permits, and a lease's permits after theirs), and share the decision's grants out in
 * arrival order. A decision is one over all of a check's policies: it grants what every one of
 * them has room for and counts that in each, so a refused request is counted by none.
 */
import type { Grant, LimitCheck, LimitOutcome, UnusedPermits, WindowCounts } from "./store";

export type { Grant };

export interface PendingCheck {
  checks: readonly LimitCheck[];
  /** Permits wanted for a lease, after those of every check of the group (lease.ts). */
  extra?: number;
  /** Filled by the decision, per policy decided: how many of `extra` it counted. */
  leased?: Grant[];
  resolve(outcomes: LimitOutcome[]): void;
  reject(error: unknown): void;
}

/**
 * Collects checks, and permits to give back, and runs them once per event-loop turn
 * (setImmediate), the checks as groups of pending checks with the same policies and keys, in
 * arrival order.
 */
export class CheckQueue {
  private pending: PendingCheck[] = [];
  private returns: UnusedPermits[] = [];
  private scheduled = false;

  constructor(private readonly run: (groups: PendingCheck[][], returns: UnusedPermits[]) => void) {}

  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    return new Promise((resolve, reject) => this.enqueue({ checks, resolve, reject }));
  }

  checkAndLease(
    checks: readonly LimitCheck[],
    extra: number,
  ): Promise<{ outcomes: LimitOutcome[]; lease: Grant[] }> {
    return new Promise((resolve, reject) => {
      const entry: PendingCheck = {
        checks,
        extra,
        leased: [],
        resolve: (outcomes) => resolve({ outcomes, lease: entry.leased! }),
        reject,
      };
      this.enqueue(entry);
    });
  }

  giveBack(permits: readonly UnusedPermits[]): void {
    for (const p of permits) this.returns.push(p);
    this.schedule();
  }

  private enqueue(entry: PendingCheck): void {
    this.pending.push(entry);
    this.schedule();
  }

  private schedule(): void {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Runs what is queued now (at close, so nothing is left waiting). */
  flush(): void {
    const batch = this.pending;
    const returns = this.returns;
    this.pending = [];
    this.returns = [];
    this.scheduled = false;
    if (batch.length === 0 && returns.length === 0) return;
    const groups = new Map<string, PendingCheck[]>();
    for (const entry of batch) {
      const signature = signatureOf(entry.checks);
      const group = groups.get(signature);
      if (group) group.push(entry);
      else groups.set(signature, [entry]);
    }
    this.run([...groups.values()], returns);
  }
}

/** The policies and keys of a check list: checks with the same signature are decided together. */
export function signatureOf(checks: readonly LimitCheck[]): string {
  if (checks.length === 1) return `${checks[0]!.policy.id}\u0000${checks[0]!.key}`;
  return checks.map((c) => `${c.policy.id}\u0000${c.key}`).join("\u0001");
}

/** Hands each check of a group its outcomes, or the store's failure. */
export function settle(group: readonly PendingCheck[], outcomes: LimitOutcome[][]): void {
  for (let i = 0; i < group.length; i++) group[i]!.resolve(outcomes[i]!);
}

export function fail(group: readonly PendingCheck[], error: unknown): void {
  for (const entry of group) entry.reject(error);
}

/**
 * The lease asked for with a group, and where to put what it gets: one entry per group asks (the
 * lease layer takes one lease per signature at a time); any other entry's extra is not asked for.
 */
export function leaseOf(group: readonly PendingCheck[]): { extra: number; leased?: Grant[] } {
  for (const entry of group) {
    if (entry.extra !== undefined && entry.extra > 0) {
      entry.leased!.length = 0;
      return { extra: entry.extra, leased: entry.leased! };
    }
  }
  return { extra: 0 };
}

/** The latest arrival's clock: a group is decided after all of its checks arrived. */
export function latestNow(group: readonly PendingCheck[]): number {
  let now = 0;
  for (const entry of group) for (const check of entry.checks) now = Math.max(now, check.now);
  return now;
}

/**
 * One policy's part of a group's decision: its windows once the grant was counted, and how many
 * permits it had room for before (floor(limit − estimate) in the tighter of its two windows, never
 * negative).
 */
export interface PolicyDecision {
  state: WindowCounts;
  room: number;
}

/** What a decision grants of `wanted`: as many as every policy has room for, counted in each. */
export function grantOf(wanted: number, rooms: readonly number[]): number {
  let granted = wanted;
  for (const room of rooms) if (room < granted) granted = room;
  return Math.max(0, granted);
}

/**
 * Turns a group's decision into each check's outcomes. The decision is one over all policies:
 * `granted` (grantOf: the group's checks, then a lease's `extra`) counted in every policy, so a
 * refused check is counted by none of them (each policy refusing on its own, in order, counted a
 * refused request's permit in the policies before the one that refused it, and a sibling refused
 * by one of those was told it full while that permit came back a moment later: probe 48a F3). The
 * first `granted` checks are admitted; each sees the count as it stood after its own permit, in
 * arrival order. A refused check sees every policy's windows as the decision left them, each
 * admitting where it has room left: the first that has none refused it, and its Retry-After is
 * the wait until all of them admit (probe 50a F1: it was the refusing policy's alone, and a retry
 * made as told met the default burst). The lease comes last, so it never takes a permit a check
 * of the same turn would have had, and the checks' outcomes leave its permits out (they are shown
 * as the lease's requests use them).
 */
export function shareGrants(
  groupSize: number,
  decisions: readonly PolicyDecision[],
  granted: number,
  lease: { extra: number; leased?: Grant[] } = { extra: 0 },
): LimitOutcome[][] {
  const outcomes: LimitOutcome[][] = Array.from({ length: groupSize }, () => []);
  const leased = Math.max(0, granted - groupSize);
  const admitted = Math.min(granted, groupSize);
  for (let index = 0; index < decisions.length; index++) {
    const { state: counted, room } = decisions[index]!;
    lease.leased?.push({ state: counted, granted: leased });
    const state =
      leased === 0
        ? counted
        : {
            ...counted,
            current: counted.current - leased,
            burstCurrent: counted.burstCurrent - leased,
          };
    for (let j = 0; j < groupSize; j++) {
      if (j >= admitted) {
        outcomes[j]!.push({ ...state, admitted: room > granted });
        continue;
      }
      // Each admitted check sees the count as it stood after its own permit, so the remaining
      // quota in its headers counts down one by one across a group, as if they had come one at a
      // time.
      const after = admitted - 1 - j;
      outcomes[j]!.push(
        after === 0
          ? { ...state, admitted: true }
          : {
              ...state,
              current: state.current - after,
              burstCurrent: state.burstCurrent - after,
              admitted: true,
            },
      );
    }
  }
  return outcomes;
}
