/**
 * @module
 * The Redis limiter store, for several VMs sharing one limit (REDIS_URL), through Bun's built-in
 * Redis client.
 *
 * The same decision as the SQLite store, made by one Lua script per check list so it is atomic in
 * Redis: each (policy, key) is a hash holding both windows' counts; the script rolls the windows,
 * grants as many of the wanted permits as fit under both limits, counts them, and sets the hash to
 * expire when it no longer matters (so there is nothing to prune). Concurrent checks of one key in
 * one event-loop turn are coalesced into one script call asking for that many permits, as in the
 * SQLite store; Bun's client pipelines the calls of one turn.
 *
 * Failure (Redis unreachable, timeout): the checks reject; the plugin fails open or closed by policy.
 */
import type { RedisClient } from "bun";
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

// KEYS: one hash per check. ARGV: wanted, then 5 values per check: window ms, burst window ms,
// limit, burst limit, now (this VM's clock).
// Returns, per check decided (it stops after the first that granted nothing), its eight numbers.
//
// Each hash keeps the instant it was last decided at (`at`), and a check stamped before it is
// decided at that instant: a VM whose clock is behind another's decides exactly as the one ahead
// did, rather than in its own older window (which would see no counts, grant a fresh limit and
// write the hash back into the past) or at the start of the hash's window with the previous count
// weighing fully (which refused, then got blocked, clients at half their limit; probes 25b, 25c).
// Up to one long window behind: a hash decided further ahead is started afresh in the check's own
// window, since holding it at that instant would freeze a client's count until this clock caught
// up; the eighth number says so (only clocks a window or more apart make one). A hash written
// before `at` was kept, and found one window ahead, is decided in that window at its start, as
// rollForward does for SQLite. The expiry is only ever moved later: a VM whose clock is ahead would
// otherwise cut it short for the others.
const SCRIPT = `
local wanted = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  if wanted <= 0 then break end
  local a = 1 + (i - 1) * 5
  local win, bwin = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local limit, blimit, now = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local row = redis.call('HMGET', KEYS[i], 'ws', 'cur', 'prev', 'bws', 'bcur', 'bprev', 'at')
  local ows, ocur, oprev = tonumber(row[1]), tonumber(row[2]) or 0, tonumber(row[3]) or 0
  local obws, obcur, obprev = tonumber(row[4]), tonumber(row[5]) or 0, tonumber(row[6]) or 0
  local oat = tonumber(row[7])
  local t = now
  local skewed = 0
  if oat and oat > now then
    if oat - now <= win then t = oat else skewed = 1 end
  end
  local ws = t - t % win
  local w = 1 - (t - ws) / win
  local bws = t - t % bwin
  local bw = 1 - (t - bws) / bwin
  if not oat and ((ows and ows > ws + win) or (obws and obws > bws + bwin)) then skewed = 1 end
  local prev, cur = 0, 0
  if ows == ws + win and not oat then ws, w, prev, cur = ows, 1, oprev, ocur
  elseif ows == ws then prev, cur = oprev, ocur elseif ows == ws - win then prev = ocur end
  local bprev, bcur = 0, 0
  if obws == bws + bwin and not oat then bws, bw, bprev, bcur = obws, 1, obprev, obcur
  elseif obws == bws then bprev, bcur = obprev, obcur elseif obws == bws - bwin then bprev = obcur end
  local room = math.floor(limit - prev * w - cur)
  local broom = math.floor(blimit - bprev * bw - bcur)
  local granted = math.max(0, math.min(wanted, room, broom))
  cur = cur + granted
  bcur = bcur + granted
  redis.call('HSET', KEYS[i], 'ws', ws, 'cur', cur, 'prev', prev, 'bws', bws, 'bcur', bcur, 'bprev', bprev, 'at', t)
  -- Kept while either window can still count: until the later of them has passed as the previous one.
  local ttl = math.max(ws + 2 * win, bws + 2 * bwin) - now
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  table.insert(out, {ws, prev, cur, bws, bprev, bcur, granted, skewed})
  wanted = granted
end
return out`;

// KEYS[1]: the hash. ARGV: window start the permits were counted in, window ms, burst window start,
// burst window ms, permits. Uncounts them where they were counted (current while the hash is in
// that window, previous once it rolled once, nothing later; never below zero); a hash that has
// expired is left absent.
const GIVE_BACK_SCRIPT = `
local row = redis.call('HMGET', KEYS[1], 'ws', 'cur', 'prev', 'bws', 'bcur', 'bprev')
if not row[1] then return 0 end
local ws, win, bws, bwin, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ows, obws = tonumber(row[1]), tonumber(row[4])
if ows == ws then redis.call('HSET', KEYS[1], 'cur', math.max(0, (tonumber(row[2]) or 0) - n))
elseif ows == ws + win then redis.call('HSET', KEYS[1], 'prev', math.max(0, (tonumber(row[3]) or 0) - n)) end
if obws == bws then redis.call('HSET', KEYS[1], 'bcur', math.max(0, (tonumber(row[5]) or 0) - n))
elseif obws == bws + bwin then redis.call('HSET', KEYS[1], 'bprev', math.max(0, (tonumber(row[6]) or 0) - n)) end
return 1`;

export interface RedisLimiterStoreOptions {
  /**
   * Told of each decision that found keys decided more than a window ahead of this VM's clock (how
   * many), whose counts it started afresh: only clocks a window or more apart do that, and then the
   * limits the VMs share are not kept.
   */
  onClockSkew?: (keys: number) => void;
}

export class RedisLimiterStore implements LeasableStore {
  private readonly queue = new CheckQueue((groups, returns) => this.runGroups(groups, returns));
  private sha: Promise<string> | null = null;

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
    // resets right after it starts.
    if (!this.client.connected) await this.client.connect();
    await this.client.del(`${PREFIX}${policy.id}:${key}`);
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
          String(r.windowStart),
          String(r.policy.windowMs),
          String(r.burstWindowStart),
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
    const args: string[] = [String(group.length)];
    for (const { policy } of checks) {
      args.push(
        String(policy.windowMs),
        String(BURST_WINDOW_MS),
        String(policy.limit),
        String(policy.burstLimit),
        String(now),
      );
    }
    const lease = leaseOf(group);
    args[0] = String(group.length + lease.extra);
    const rows = (await this.evaluate(keys, args)) as number[][];
    const skewed = rows.reduce((n, row) => n + (row[7] === 1 ? 1 : 0), 0);
    if (skewed > 0) this.options.onClockSkew?.(skewed);
    // The script stops after the first policy that granted nothing, as shareGrants does.
    return shareGrants(
      group.length,
      checks.length,
      (index) => {
        const row = rows[index];
        if (row === undefined) return undefined;
        return {
          state: {
            windowStart: row[0]!,
            previous: row[1]!,
            current: row[2]!,
            burstWindowStart: row[3]!,
            burstPrevious: row[4]!,
            burstCurrent: row[5]!,
          },
          granted: row[6]!,
        };
      },
      lease,
    );
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
