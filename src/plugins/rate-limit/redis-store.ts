/**
 * @module
 * The Redis limiter store, for several VMs sharing one limit (REDIS_URL), through Bun's built-in
 * Redis client.
 *
 * The same decision as the SQLite store, made by one Lua script per check list so it is atomic in
 * Redis: each (policy, key) is a hash holding both windows' counts; the script rolls the windows,
 * grants as many of the wanted permits as fit under both limits, counts them, and sets the hash to
 * expire when it no longer matters (so there is nothing to prune). It decides on Redis's clock, so
 * the VMs' clocks do not reach the limits they share (see SCRIPT). Concurrent checks of one key in
 * one event-loop turn are coalesced into one script call asking for that many permits, as in the
 * SQLite store; Bun's client pipelines the calls of one turn.
 *
 * Failure (Redis unreachable, timeout): the checks reject; the plugin fails open or closed by policy.
 */
import type { RedisClient } from "bun";
import { firstLine } from "../../error-line";
import {
  CheckQueue,
  fail,
  latestNow,
  leaseOf,
  type PendingCheck,
  settle,
  shareGrants,
} from "./coalesce";
import { BURST_WINDOW_MS, type Policy } from "./policies";
import type { LeasableStore, LimitCheck, LimitOutcome, UnusedPermits } from "./store";

const PREFIX = "palisade:rl:";
/** Outcome windows remembered for give-backs; a lease lives 200 ms, so recent ones are enough. */
const TOLD_WINDOWS_KEPT = 4096;

/**
 * A stored count as the SQLite store reads one (sliding-window.ts, storedCount): the decimal digits
 * of a whole number up to 2^53 − 1, else 0. Lua's tonumber also took "-1000", "-inf", "nan" and
 * hex, and a count of −1000 written in by hand admitted a thousand more (probe 54b F2).
 */
const STORED_COUNT = `
local function count(value)
  if type(value) ~= 'string' or not string.match(value, '^%d+$') or #value > 16 then return 0 end
  local n = tonumber(value)
  if n > 9007199254740991 then return 0 end
  return n
end`;

// KEYS: one hash per check. ARGV: wanted; the instant to decide at, or anything else to decide at
// Redis's own clock (TIME); the instant (Redis's) after which the asker no longer waits, or anything
// else for none; then 4 values per check: window ms, burst window ms, limit, burst limit.
// Returns, per check, nine numbers: the windows after the decision, the permits granted, the
// instant it was decided at, and the room the check's policy had. One decision over all checks:
// every hash is read and rolled first, then what every policy has room for is counted in each (a
// refused request is counted by none, as in the SQLite store: coalesce.ts). Run after its
// deadline (a stalled Redis running what was queued), it counts nothing and returns one row
// {-1, 0, 0, 0, 0, 0, 0, now, 0}: the asker answered the request without it.
//
// Deciding at Redis's clock, every VM decides on one clock: a VM whose clock is behind another's
// decides as the one ahead does. Decided at each VM's own clock, a key counted by a VM ahead was in
// a later window than the VM behind's: started afresh there it lost its counts (probe 24c: a locked
// account unlocked), decided at that window's start it counted too much (25b, 25c: clients at half
// their limit refused, then blocked), decided at the instant the VM ahead last decided it, a client
// moving to the VM behind stood still at that instant (25d). A hash already in the next window
// (Redis's clock set back; a hash written by a VM on its own clock, as in tests and during an
// upgrade from a release that did) is decided in that window at its start, as rollForward does for
// SQLite; one further ahead is started afresh (why: see rollForward). The expiry is only ever moved
// later.
const SCRIPT = `
${STORED_COUNT}
local wanted = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if not now then
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local decideBy = tonumber(ARGV[3])
if decideBy and now > decideBy then return {{-1, 0, 0, 0, 0, 0, 0, now, 0}} end
local rows = {}
local granted = wanted
for i = 1, #KEYS do
  local a = 3 + (i - 1) * 4
  local win, bwin = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local limit, blimit = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local ws = now - now % win
  local w = 1 - (now - ws) / win
  local bws = now - now % bwin
  local bw = 1 - (now - bws) / bwin
  local row = redis.pcall('HMGET', KEYS[i], 'ws', 'cur', 'prev', 'bws', 'bcur', 'bprev')
  -- Not a hash (written by hand): a new key, replaced by this decision's hash.
  if row.err then redis.call('DEL', KEYS[i]); row = {} end
  local ows, ocur, oprev = tonumber(row[1]), count(row[2]), count(row[3])
  local obws, obcur, obprev = tonumber(row[4]), count(row[5]), count(row[6])
  local prev, cur = 0, 0
  if ows == ws + win then ws, w, prev, cur = ows, 1, oprev, ocur
  elseif ows == ws then prev, cur = oprev, ocur elseif ows == ws - win then prev = ocur end
  local bprev, bcur = 0, 0
  if obws == bws + bwin then bws, bw, bprev, bcur = obws, 1, obprev, obcur
  elseif obws == bws then bprev, bcur = obprev, obcur elseif obws == bws - bwin then bprev = obcur end
  local room = math.max(0, math.min(math.floor(limit - prev * w - cur), math.floor(blimit - bprev * bw - bcur)))
  granted = math.min(granted, room)
  rows[i] = {ws, prev, cur, bws, bprev, bcur, win, bwin, room}
end
granted = math.max(0, granted)
local out = {}
for i = 1, #KEYS do
  local r = rows[i]
  local ws, prev, cur, bws, bprev, bcur, win, bwin = r[1], r[2], r[3] + granted, r[4], r[5], r[6] + granted, r[7], r[8]
  if granted > 0 then
    redis.call('HSET', KEYS[i], 'ws', ws, 'cur', cur, 'prev', prev, 'bws', bws, 'bcur', bcur, 'bprev', bprev)
    -- Kept while either window can still count: until the later of them has passed as the previous one.
    local ttl = math.max(ws + 2 * win, bws + 2 * bwin) - now
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
  out[i] = {ws, prev, cur, bws, bprev, bcur, granted, now, r[9]}
end
return out`;

// KEYS[1]: the hash. ARGV: window start the permits were counted in, window ms, burst window start,
// burst window ms, permits. Uncounts them where they were counted (current while the hash is in
// that window, previous once it rolled once, nothing later; never below zero); a hash that has
// expired is left absent.
const GIVE_BACK_SCRIPT = `
${STORED_COUNT}
local row = redis.pcall('HMGET', KEYS[1], 'ws', 'cur', 'prev', 'bws', 'bcur', 'bprev')
if row.err or not row[1] then return 0 end
local ws, win, bws, bwin, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ows, obws = tonumber(row[1]), tonumber(row[4])
if ows == ws then redis.call('HSET', KEYS[1], 'cur', math.max(0, count(row[2]) - n))
elseif ows == ws + win then redis.call('HSET', KEYS[1], 'prev', math.max(0, count(row[3]) - n)) end
if obws == bws then redis.call('HSET', KEYS[1], 'bcur', math.max(0, count(row[5]) - n))
elseif obws == bws + bwin then redis.call('HSET', KEYS[1], 'bprev', math.max(0, count(row[6]) - n)) end
return 1`;

export interface RedisLimiterStoreOptions {
  /**
   * Whose clock decides: Redis's (the default: every VM on one clock), or each check's own `now`
   * (tests that move a clock by hand through windows).
   */
  time?: "redis" | "caller";
  /**
   * How long a decision may wait for Redis before it fails (the plugin then fails open or closed).
   * A Redis that stops answering on an open connection (stalled, paused, a network that drops
   * packets) would otherwise hold every limited request for as long as it lasts (probe 25f F1).
   * A decision that ran after its deadline counted permits nobody used: fewer admitted, never more.
   * @default 500, as long as the SQLite store waits for a locked file
   */
  deadlineMs?: number;
}

/** Rejects with a store failure when `work` has not settled within `ms`. */
export function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer from Redis in ${ms} ms`)), ms);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

/** Whether the script ran after its deadline and counted nothing (its one row starts with -1). */
function ranLate(rows: readonly (readonly number[])[]): boolean {
  return rows[0]?.[0] === -1;
}

export class RedisLimiterStore implements LeasableStore {
  private readonly queue = new CheckQueue((groups, returns) => this.runGroups(groups, returns));
  private sha: Promise<string> | null = null;
  /**
   * This VM's clock minus Redis's, at the last decision: the windows of an outcome are told in
   * this VM's time (its headers, leases and give-backs reckon with its own `now`), and a
   * give-back's windows translated back.
   */
  private offset = 0;
  /**
   * Redis's clock minus this process's monotonic clock (`performance.now()`), at the last
   * decision; null before one. A decision's deadline is told to Redis from it.
   */
  private redisMinusMonotonic: number | null = null;
  /**
   * The window starts of recent outcomes as told to this VM, and Redis's: a give-back comes with
   * the former, and the offset may have moved since (this VM's clock stepped) by more than half a
   * burst window, where rounding would pick the wrong one. Cleared when it grows past a bound.
   */
  private readonly toldWindows = new Map<number, number>();

  constructor(
    private readonly client: RedisClient,
    private readonly options: RedisLimiterStoreOptions = {},
  ) {}

  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    return this.queue.check(checks);
  }

  checkAndLease(checks: readonly LimitCheck[], extra: number) {
    return this.queue.checkAndLease(checks, extra);
  }

  giveBack(permits: readonly UnusedPermits[]): void {
    this.queue.giveBack(permits);
  }

  async reset(policy: Policy, key: string): Promise<void> {
    // Without an offline queue a command fails until the client has connected: a CLI command
    // resets right after it starts (bounded by the client's connection timeout).
    if (!this.client.connected) await this.client.connect();
    // Within the decisions' deadline: an admin's lift of a block waited for it, and answered only
    // when a stalled Redis resumed (probe 71c F3). A reset that misses it fails as any store
    // failure does (the lift logs it); the DEL still queued runs when Redis does.
    await withDeadline(
      this.client.del(`${PREFIX}${policy.id}:${key}`),
      this.options.deadlineMs ?? 500,
      "rate-limit reset",
    );
  }

  /** Redis expires each key itself when its windows have passed. */
  prune(): number {
    return 0;
  }

  close(): void {
    // Sends what is queued (leases given back at close) before the connection goes.
    this.queue.flush();
    this.client.close();
  }

  /** Each group is one script call; Bun's client pipelines the calls of one turn. */
  private runGroups(groups: PendingCheck[][], returns: UnusedPermits[]): void {
    for (const r of returns) {
      // A failure leaves them counted: never more than the limit, only fewer.
      this.client
        .send("EVAL", [
          GIVE_BACK_SCRIPT,
          "1",
          `${PREFIX}${r.policy.id}:${r.key}`,
          String(this.redisWindow(r.windowStart, r.policy.windowMs)),
          String(r.policy.windowMs),
          String(this.redisWindow(r.burstWindowStart, BURST_WINDOW_MS)),
          String(BURST_WINDOW_MS),
          String(r.count),
        ])
        .catch(() => {});
    }
    for (const group of groups) {
      this.decideGroup(group).then(
        (outcomes) => settle(group, outcomes),
        (error) => fail(group, error),
      );
    }
  }

  private async decideGroup(group: readonly PendingCheck[]): Promise<LimitOutcome[][]> {
    const checks = group[0]!.checks;
    const now = latestNow(group);
    const keys = checks.map((c) => `${PREFIX}${c.policy.id}:${c.key}`);
    const lease = leaseOf(group);
    const deadlineMs = this.options.deadlineMs ?? 500;
    const started = performance.now();
    // Where a policy fails closed, a decision the asker stopped waiting for answered its request
    // 503: run later by a stalled Redis, it must count nothing — before whatever was queued behind
    // it on the connection is decided (probe 29e F1: a give-back sent once the late answer came
    // landed after the retry queued behind it, which was refused and counted towards a block).
    // Told in Redis's time from this process's monotonic clock, which a step of the wall clock
    // does not move (probe 29f F2, F3); none before a decision has told Redis's time, and none on
    // the caller's clock.
    const failClosed = checks.some((check) => check.policy.failClosed);
    const argsWith = (decideBy: string) => {
      const args = [
        String(group.length + lease.extra),
        this.options.time === "caller" ? String(now) : "redis",
        decideBy,
      ];
      for (const { policy } of checks) {
        args.push(
          String(policy.windowMs),
          String(BURST_WINDOW_MS),
          String(policy.limit),
          String(policy.burstLimit),
        );
      }
      return args;
    };
    const deadlineInRedis = () =>
      failClosed && this.redisMinusMonotonic !== null && this.options.time !== "caller"
        ? String(Math.ceil(started + this.redisMinusMonotonic + deadlineMs))
        : "none";
    let decision = this.evaluate(keys, argsWith(deadlineInRedis()));
    let rows: number[][];
    try {
      rows = (await withDeadline(decision, deadlineMs, "rate-limit decision")) as number[][];
      if (ranLate(rows)) {
        // Judged late by Redis though answered in time: Redis's clock stepped since it was read.
        // Read again from this answer, and decided once more within what is left of the wait.
        this.redisMinusMonotonic = rows[0]![7]! - started;
        decision = this.evaluate(keys, argsWith(deadlineInRedis()));
        const left = Math.max(1, deadlineMs - (performance.now() - started));
        rows = (await withDeadline(decision, left, "rate-limit decision")) as number[][];
        if (ranLate(rows)) throw new Error("rate-limit decision: Redis ran it late");
      }
    } catch (error) {
      // Past its deadline the script is still in the connection's pipeline, and a stalled Redis
      // runs it when it resumes. Where a policy of these checks fails closed the request was
      // refused (503) on this failure: the script refuses itself past its deadline (above), and
      // what it counted all the same (no offset known yet; run in the moment between its
      // deadline in Redis and the answer's arrival here) is given back as it arrives (probe 29d
      // F1: a client that obeyed Retry-After through a stall spent its sign-ins, and its first one
      // after was a 429 counted as a violation). A fail-open check was let through: its count
      // stands.
      if (failClosed) {
        decision.then(
          (late) => this.giveBackLate(keys, checks, late as number[][]),
          () => {},
        );
      }
      throw error;
    }
    const offset = rows.length > 0 ? now - rows[0]![7]! : this.offset;
    this.offset = offset;
    // Measured from the send: an answer's travel back makes the deadline later, never earlier.
    if (rows.length > 0) this.redisMinusMonotonic = rows[0]![7]! - started;
    if (this.options.time !== "caller") {
      if (this.toldWindows.size > TOLD_WINDOWS_KEPT) this.toldWindows.clear();
      for (const row of rows) {
        this.toldWindows.set(row[0]! + offset, row[0]!);
        this.toldWindows.set(row[3]! + offset, row[3]!);
      }
    }
    return shareGrants(
      group.length,
      rows.map((row) => ({
        state: {
          windowStart: row[0]! + offset,
          previous: row[1]!,
          current: row[2]!,
          burstWindowStart: row[3]! + offset,
          burstPrevious: row[4]!,
          burstCurrent: row[5]!,
        },
        room: row[8]!,
      })),
      rows[0]?.[6] ?? 0,
      lease,
    );
  }

  /** Uncounts what a decision answered after its deadline granted, in Redis's own windows. */
  private giveBackLate(keys: string[], checks: readonly LimitCheck[], rows: number[][]): void {
    if (!Array.isArray(rows) || ranLate(rows)) return;
    rows.forEach((row, index) => {
      const policy = checks[index]?.policy;
      const granted = row?.[6];
      if (policy === undefined || typeof granted !== "number" || granted <= 0) return;
      this.client
        .send("EVAL", [
          GIVE_BACK_SCRIPT,
          "1",
          keys[index]!,
          String(row[0]),
          String(policy.windowMs),
          String(row[3]),
          String(BURST_WINDOW_MS),
          String(granted),
        ])
        .catch(() => {});
    });
  }

  /**
   * A window start as this VM told it back to Redis's: as told at its decision, or else the nearest
   * window at the latest offset (which moves by the latency of a decision, milliseconds, unless
   * this VM's clock steps).
   */
  private redisWindow(start: number, windowMs: number): number {
    return this.toldWindows.get(start) ?? Math.round((start - this.offset) / windowMs) * windowMs;
  }

  /** EVALSHA, loading the script on first use and again if Redis forgot it (a restart). */
  private async evaluate(keys: string[], args: string[]): Promise<unknown> {
    this.sha ??= this.client.send("SCRIPT", ["LOAD", SCRIPT]) as Promise<string>;
    try {
      return await this.client.send("EVALSHA", [
        await this.sha,
        String(keys.length),
        ...keys,
        ...args,
      ]);
    } catch (error) {
      if (!String(error).includes("NOSCRIPT")) {
        this.sha = null;
        throw error;
      }
      this.sha = this.client.send("SCRIPT", ["LOAD", SCRIPT]) as Promise<string>;
      return this.client.send("EVALSHA", [await this.sha, String(keys.length), ...keys, ...args]);
    }
  }
}

/**
 * Throws, in the server's words, unless Redis runs what every decision needs: `SCRIPT LOAD` and
 * `EVALSHA` (a decision) and `EVAL` (leases given back). A Redis whose ACL or `rename-command`
 * refuses scripts stores keys and answers PING, and failed every decision while `/ready` said it
 * was up (probe 80b F2). A script that only returns, so nothing is counted: a write refused for a
 * passing reason (full, replicas missing) is `/ready`'s to tell, not a refusal of scripts.
 */
export async function assertScriptsRun(
  send: (command: string, args: string[]) => Promise<unknown>,
): Promise<void> {
  try {
    const sha = String(await send("SCRIPT", ["LOAD", READY_SCRIPT]));
    await send("EVALSHA", [sha, "0"]);
    await send("EVAL", [READY_SCRIPT, "0"]);
  } catch (error) {
    throw new Error(
      `Redis refuses the limiter's scripts (SCRIPT LOAD, EVALSHA and EVAL are needed: ${firstLine(error)})`,
    );
  }
}

/**
 * Throws when Redis is a read-only replica: it runs scripts but refuses what they write, so every
 * decision that admits a request fails, and that lasts until REDIS_URL names the primary (probe
 * 85b F1: such a start said nothing); so does an ACL that denies the limiter's keys (85g F3).
 * Asked by a script that writes the readiness key, as a decision writes its counts; any other
 * refusal of the write (a full Redis, replicas missing) is left to `/ready`, since it may pass
 * (probe 85d F4: refused at the start, it stopped production).
 */
export async function assertWritable(
  send: (command: string, args: string[]) => Promise<unknown>,
): Promise<void> {
  try {
    await send("EVAL", [WRITE_SCRIPT, "1", READY_KEY]);
  } catch (error) {
    const reason = firstLine(error);
    if (/^READONLY\b/.test(reason)) {
      throw new Error(
        `Redis is a read-only replica (${reason}): the limiter's counts cannot be written, so every decision that admits a request fails; name the primary in REDIS_URL`,
      );
    }
    // An ACL that denies the limiter's keys lasts as the replica does (probe 85g F3).
    if (/^NOPERM\b/.test(reason)) {
      throw new Error(
        `Redis refuses the limiter's keys (${reason}): every limiter decision fails; give REDIS_URL's user the keys ~palisade:rl:*`,
      );
    }
  }
}

/**
 * The key readiness writes (src/core.ts), gone in a second: in the limiter's namespace, so an ACL
 * that gives the limiter `~palisade:rl:*` lets it be written (probe 85d F4).
 */
export const READY_KEY = "palisade:rl:ready";
const READY_SCRIPT = "return 1";
const WRITE_SCRIPT = "redis.call('SET', KEYS[1], '1', 'PX', 1000) return 1";
