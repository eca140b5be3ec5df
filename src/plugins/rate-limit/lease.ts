/**
 * @module
 * Permit leasing: a layer over a limiter store (SQLite or Redis) that lets a process admit a hot
 * key's requests without asking the store for each one.
 *
 * How: when one check signature (the policies and keys of a request, as the store groups them) is
 * checked again within a lease period in this process, its next store decision also counts a few
 * permits more — the lease — in the same decision (or script call). The next requests with that
 * signature are admitted from the lease, here, without a transaction and without waiting for the
 * next event-loop turn; their outcomes are the lease's stored windows minus the permits still
 * unused, so the RateLimit headers count down one by one. A lease is never bigger than the checks
 * of its signature seen in the last lease period, so a key seen now and then does not take
 * permits it will not use.
 *
 * Guarantees: leased permits are counted in the store when they are taken, so processes sharing
 * it never admit more than the limit between them. A lease is at most `fraction` of what remained
 * in every window of every policy (as this process last saw it), at most `maxPermits`, and none
 * under 2 permits: near the limit every request is decided by the store, as without leasing. If
 * the store shows another process used the quota meanwhile, a lease is kept only while at least
 * as many permits remain in the store as it holds; otherwise it is given back at once. Signatures
 * with a fail-closed policy (login, register, refresh, privacy, chat, payments, lockouts) or a
 * policy whose limit or burst limit is under `minLimit` never lease. A lease ends after `ttlMs`, at
 * the end of any window it was counted in (so it is never used in a later window), when used up,
 * or at close; its unused permits are given back to the store with its next decision, uncounted in
 * the window they were counted in. Until then another process sees them as used: up to `ttlMs` of
 * a hot client's lease is briefly unavailable to it, which only matters far from the limit.
 */
import { signatureOf } from "./coalesce";
import { BURST_WINDOW_MS, type Policy } from "./policies";
import { remaining } from "./sliding-window";
import type {
  Grant,
  LeasableStore,
  LimitCheck,
  LimiterStore,
  LimitOutcome,
  UnusedPermits,
  WindowCounts,
} from "./store";

export interface LeaseOptions {
  /** How long a lease lives, and the period over which demand is counted. @default 200 */
  ttlMs?: number;
  /** The largest share of what remains that one lease takes. @default 0.1 */
  fraction?: number;
  /**
   * The most permits one lease holds. The checks that arrive while a used-up lease is renewed wait
   * for the store's decision: at 256, a tenth of a hot key's checks at 32 in flight (in process;
   * 5 % over HTTP), at 2048 1.4 % (0.7 %). A lease is still at most `fraction` of what remains.
   * @default 2048
   */
  maxPermits?: number;
  /** Policies with a smaller limit or burst limit never lease. @default 100 */
  minLimit?: number;
  /** Signatures tracked for demand at most; a flood of new keys clears the cold ones. @default 10000 */
  maxTracked?: number;
}

interface Lease {
  checks: readonly LimitCheck[];
  /** Per policy: the stored windows right after the lease was counted. */
  states: WindowCounts[];
  unused: number;
  /** Used only from the start of the latest window it was counted in until it expires. */
  validFrom: number;
  expiresAt: number;
  timer: Timer;
}

interface Demand {
  /** Checks in the current lease period (which started at `periodStart`) and in the one before. */
  periodStart: number;
  count: number;
  before: number;
  /** The windows of the last store decision while hot, to size the next lease. */
  last: WindowCounts[] | null;
  lease: Lease | null;
  /** The store decision taking the next lease, while it runs. */
  acquiring: Promise<unknown> | null;
}

const MIN_LEASE = 2;

export class LeasingStore implements LimiterStore {
  private readonly ttlMs: number;
  private readonly fraction: number;
  private readonly maxPermits: number;
  private readonly minLimit: number;
  private readonly maxTracked: number;
  private readonly demand = new Map<string, Demand>();

  constructor(
    private readonly store: LeasableStore,
    options: LeaseOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 200;
    this.fraction = options.fraction ?? 0.1;
    this.maxPermits = options.maxPermits ?? 2048;
    this.minLimit = options.minLimit ?? 100;
    this.maxTracked = options.maxTracked ?? 10_000;
    if (!(this.ttlMs > 0 && this.fraction > 0 && this.fraction < 1 && this.maxPermits >= 0)) {
      throw new Error("lease: ttlMs > 0, 0 < fraction < 1 and maxPermits >= 0 are required");
    }
  }

  /** A permit of the signature's lease while one is valid; nothing is counted otherwise. */
  checkNow(checks: readonly LimitCheck[]): LimitOutcome[] | undefined {
    const now = checks[0]!.now;
    const entry = this.demand.get(signatureOf(checks));
    if (entry === undefined || entry.lease === null) return undefined;
    const lease = entry.lease;
    if (now < lease.validFrom || now >= lease.expiresAt) return undefined;
    return this.useLease(entry, lease);
  }

  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    return this.decide(checks, true);
  }

  /**
   * `mayWait`: a check arriving while its signature's next lease is being taken waits for it and
   * is decided again (most then take a permit of that lease, as the next requests would); decided
   * again, it goes to the store rather than wait a second time, so a lease the store does not
   * grant delays a check by one decision at most. If the store failed to decide (locked past its
   * busy wait, unwritable), the checks that waited fail with that failure, as each would have met
   * it: a locked store holds them one busy wait, not two.
   */
  private decide(checks: readonly LimitCheck[], mayWait: boolean): Promise<LimitOutcome[]> {
    const now = checks[0]!.now;
    const signature = signatureOf(checks);
    const entry = this.demand.get(signature);
    if (entry === undefined) {
      this.track(signature, {
        periodStart: now,
        count: 1,
        before: 0,
        last: null,
        lease: null,
        acquiring: null,
      });
      return this.store.check(checks);
    }
    const lease = entry.lease;
    if (lease !== null) {
      if (now >= lease.validFrom && now < lease.expiresAt) {
        return Promise.resolve(this.useLease(entry, lease));
      }
      this.end(entry);
    }
    if (entry.acquiring !== null && mayWait) {
      return entry.acquiring.then(() => this.decide(checks, false));
    }
    const demand = this.countDemand(entry, now);
    if (demand < MIN_LEASE || entry.acquiring !== null || !this.mayLease(checks)) {
      return this.store.check(checks);
    }
    const size = Math.min(demand, this.leaseSize(entry.last, checks, now));
    if (size < MIN_LEASE) return this.recordLast(entry, this.store.check(checks));
    const acquiring = this.store.checkAndLease(checks, size).then(
      ({ outcomes, lease: grants }) => {
        entry.acquiring = null;
        entry.last = outcomes.length === checks.length ? outcomes : null;
        this.start(entry, checks, grants, size, now);
        return outcomes;
      },
      (error: unknown) => {
        entry.acquiring = null;
        throw error;
      },
    );
    entry.acquiring = acquiring;
    return acquiring;
  }

  private useLease(entry: Demand, lease: Lease): LimitOutcome[] {
    lease.unused--;
    entry.count++;
    const outcomes = leasedOutcomes(lease);
    if (lease.unused === 0) this.end(entry);
    return outcomes;
  }

  /** Permits counted ahead by a caller (a sign-in failure counted before its password proved right). */
  giveBack(permits: readonly UnusedPermits[]): void {
    this.store.giveBack(permits);
  }

  /** Any lease of the key alone ends first (its unused permits would be given back after). */
  reset(policy: Policy, key: string): Promise<void> {
    const entry = this.demand.get(signatureOf([{ policy, key, now: 0 }]));
    if (entry?.lease) this.end(entry);
    return this.store.reset(policy, key);
  }

  prune(now: number): number {
    return this.store.prune(now);
  }

  /** Gives every outstanding lease's unused permits back, then closes the store (which sends them). */
  close(): void {
    for (const entry of this.demand.values()) if (entry.lease !== null) this.end(entry);
    this.demand.clear();
    this.store.close();
  }

  private track(signature: string, entry: Demand): void {
    if (this.demand.size >= this.maxTracked) {
      for (const [key, value] of this.demand) {
        if (value.lease === null && value.acquiring === null) this.demand.delete(key);
      }
      if (this.demand.size >= this.maxTracked) return;
    }
    this.demand.set(signature, entry);
  }

  private recordLast(entry: Demand, decided: Promise<LimitOutcome[]>): Promise<LimitOutcome[]> {
    return decided.then((outcomes) => {
      entry.last = outcomes;
      return outcomes;
    });
  }

  /**
   * How many checks of this signature came in the last lease period or so (this one included): a
   * lease is never bigger, so a key seen now and then does not lease permits it will not use.
   */
  private countDemand(entry: Demand, now: number): number {
    const elapsed = now - entry.periodStart;
    if (elapsed < 0 || elapsed >= 2 * this.ttlMs) {
      entry.periodStart = now;
      entry.before = 0;
      entry.count = 0;
    } else if (elapsed >= this.ttlMs) {
      entry.periodStart += this.ttlMs;
      entry.before = entry.count;
      entry.count = 0;
    }
    entry.count++;
    return Math.max(entry.count, entry.before);
  }

  /** Fail-closed policies and small limits are always decided by the store. */
  private mayLease(checks: readonly LimitCheck[]): boolean {
    for (const { policy } of checks) {
      if (policy.failClosed || policy.limit < this.minLimit || policy.burstLimit < this.minLimit) {
        return false;
      }
    }
    return this.maxPermits >= MIN_LEASE;
  }

  /** A fraction of the least that remains in any window of any policy, or 0. */
  private leaseSize(
    last: WindowCounts[] | null,
    checks: readonly LimitCheck[],
    now: number,
  ): number {
    if (last === null || last.length !== checks.length) return 0;
    let size = this.maxPermits;
    for (let i = 0; i < checks.length; i++) {
      const policy = checks[i]!.policy;
      const [long, burst] = leftIn(policy, last[i]!, now);
      size = Math.min(size, Math.floor(this.fraction * long), Math.floor(this.fraction * burst));
    }
    return size;
  }

  private start(
    entry: Demand,
    checks: readonly LimitCheck[],
    grants: Grant[],
    size: number,
    now: number,
  ): void {
    const counted = grants.map((g) => g.granted);
    const whole =
      grants.length === checks.length &&
      grants.every((g, i) => {
        if (g.granted !== size) return false;
        // Another process may have used the quota since this one last looked.
        const [long, burst] = leftIn(checks[i]!.policy, g.state, now);
        return long >= size && burst >= size;
      });
    if (!whole) {
      this.returnUnused(checks, grants, counted);
      return;
    }
    // Never used outside the windows it was counted in: past their end it would be counted in a
    // window that is already sliding out.
    let validFrom = now;
    let expiresAt = now + this.ttlMs;
    for (let i = 0; i < checks.length; i++) {
      const { state } = grants[i]!;
      validFrom = Math.max(validFrom, state.windowStart, state.burstWindowStart);
      expiresAt = Math.min(
        expiresAt,
        state.windowStart + checks[i]!.policy.windowMs,
        state.burstWindowStart + BURST_WINDOW_MS,
      );
    }
    if (expiresAt <= validFrom) {
      this.returnUnused(checks, grants, counted);
      return;
    }
    const lease: Lease = {
      checks,
      states: grants.map((g) => g.state),
      unused: size,
      validFrom,
      expiresAt,
      timer: setTimeout(
        () => {
          if (entry.lease === lease) this.end(entry);
        },
        Math.max(1, expiresAt - now),
      ),
    };
    lease.timer.unref();
    entry.lease = lease;
  }

  private end(entry: Demand): void {
    const lease = entry.lease!;
    entry.lease = null;
    clearTimeout(lease.timer);
    entry.last = leasedOutcomes(lease);
    if (lease.unused > 0) {
      this.returnUnused(
        lease.checks,
        lease.states.map((state) => ({ state, granted: lease.unused })),
        lease.states.map(() => lease.unused),
      );
    }
  }

  private returnUnused(checks: readonly LimitCheck[], grants: Grant[], counts: number[]): void {
    const permits: UnusedPermits[] = [];
    for (let i = 0; i < grants.length; i++) {
      if (counts[i]! <= 0) continue;
      const { state } = grants[i]!;
      permits.push({
        policy: checks[i]!.policy,
        key: checks[i]!.key,
        windowStart: state.windowStart,
        burstWindowStart: state.burstWindowStart,
        count: counts[i]!,
      });
    }
    if (permits.length > 0) this.store.giveBack(permits);
  }
}

/** What a request admitted from the lease sees: the stored windows without the unused permits. */
function leasedOutcomes(lease: Lease): LimitOutcome[] {
  const unused = lease.unused;
  return lease.states.map((s) => ({
    windowStart: s.windowStart,
    previous: s.previous,
    current: s.current - unused,
    burstWindowStart: s.burstWindowStart,
    burstPrevious: s.burstPrevious,
    burstCurrent: s.burstCurrent - unused,
    admitted: true,
  }));
}

/** What remains now in a policy's long and burst windows. */
function leftIn(policy: Policy, state: WindowCounts, now: number): [number, number] {
  return [
    remaining(state, now, policy.windowMs, policy.limit),
    remaining(
      {
        previous: state.burstPrevious,
        current: state.burstCurrent,
        windowStart: state.burstWindowStart,
      },
      now,
      BURST_WINDOW_MS,
      policy.burstLimit,
    ),
  ];
}

/** The store with leasing over it. */
export function withLeases(store: LeasableStore, options?: LeaseOptions): LeasingStore {
  return new LeasingStore(store, options);
}
