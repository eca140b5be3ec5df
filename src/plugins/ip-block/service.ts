/**
 * @module
 * IP blocks: automatic ones after repeated violations, manual ones by an admin. Blocks live in
 * SQLite (they survive restarts and are shared by every process on the file). What the file says of
 * a subject is kept for `cacheTtlMs` (for the last SUBJECTS_REMEMBERED subjects asked about), so a
 * client's next requests within it cost no query and its first one an indexed read; a block made or
 * lifted by another process takes effect here within that time. The whole table is never read on
 * the request path: a reload of every block in force each second held the event loop 250–680 ms at
 * 40,000–65,000 automatic blocks, which a client with an IPv6 /48 can earn (probe 84h F1). The
 * `ip_blocks_active` gauge is counted by a sweep of the table in pages, a bounded slice at each
 * scrape.
 *
 * Violations (rate-limit refusals of anonymous requests, failed logins) are counted with the
 * limiter store, as sliding windows per address; crossing a threshold blocks the address for 15
 * minutes, then 1 hour, then 24 hours for each further automatic block within a week.
 *
 * A signed-in principal's rate-limit refusals count against the principal, not the address it
 * came from: one noisy user behind a NAT must not get the office blocked. Crossing the same
 * threshold locks the principal out (5 minutes, then 15, then 1 hour), stored as a block whose
 * subject is the principal (`user:…`, `key:…`), so it is shared, listed and lifted like the others.
 *
 * An IPv6 client is keyed by its /64, and one holding a /48 (a site's usual assignment) has 65,536
 * of them: rotating through them, it earned a block and an audit row for each (~5 MB a minute of
 * rows: probe 89d F3). So once `siteBlocks.count` distinct /64s of one /48 (16 by default) hold an
 * automatic block made within the hour, none of them lifted, the whole /48 is blocked, for 15
 * minutes and then an hour (never a day: a /48 may be shared, a carrier's devices or an ISP's
 * customers, and its block refuses them all). A /48 holding a trusted proxy or an address exempt
 * from the limits is never blocked so: its block would refuse them.
 *
 * Every row is sealed (seal.ts): one that does not match its seal, written into the file by someone
 * without AUDIT_SECRET_KEY, blocks nothing and is neither listed nor counted.
 */
import type { Database } from "bun:sqlite";
import { inArray, lt, type SQL, sql } from "drizzle-orm";
import type ipaddr from "ipaddr.js";
import { type Clock, elapsedMs } from "../../clock";
import { afterTransaction } from "../../db/after-transaction";
import { type AppDatabase, drizzleOf } from "../../db/client";
import { preparedOnUse } from "../../db/prepared-on-use";
import { insertWithRandomId } from "../../db/random-id";
import { blockEndUnwritten, ipBlocks } from "../../db/schema";
import { FIRST_TIME_MS, LAST_TIME_MS } from "../../db/stored-values";
import { encodeCursor } from "../../list-cursor";
import { type Logger, secretScrubber, storedText } from "../../logging/logger";
import { scrubAnySpelling } from "../../logging/scrub";
import { RecentEntries } from "../../recent-entries";
import type { AuditLog } from "../audit/log";
import { ActorGone, parsePrincipalRef } from "../auth/principal";
import type { ResolvedClient } from "../client-ip";
import type { Address, Range } from "../client-ip/address";
import { siteOfKey } from "../client-ip/resolve";
import { METRIC } from "../metrics/names";
import { Gauge, type Registry } from "../metrics/prom";
import { limiterFailed } from "../rate-limit/enforce";
import type { RateLimitMetrics } from "../rate-limit/metrics";
import type { Policy } from "../rate-limit/policies";
import type { LimiterStore, LimitOutcome } from "../rate-limit/store";
import {
  type BlockSeal,
  type BlockTamperReporter,
  blockTamperReporter,
  SEALED_BLOCK_COLUMNS,
  type SealedBlock,
  sealedFields,
} from "./seal";

const MINUTE = 60_000;
/** The prefix an IPv6 site is blocked as, once enough of its /64s are (siteKeyOf). */
const SITE_PREFIX_BITS = 48;
/**
 * Subjects whose answer a process keeps (~100 B each): past it, the older half goes (RecentEntries).
 */
const SUBJECTS_REMEMBERED = 50_000;
/** Rows the gauge's sweep reads at a time, and how long one scrape may move it on. */
const SWEEP_PAGE = 256;
const SWEEP_MS = 20;
/** The longest block reason, in UTF-16 units: the admin API's and the CLI's bound, and the store's. */
export const MAX_BLOCK_REASON_LENGTH = 500;

/** Bidirectional overrides, embeddings and isolates: they draw a reason otherwise than it is stored. */
const REORDERS = /[\u202A-\u202E\u2066-\u2069]/u;

/**
 * Why a block's reason is refused (the API's 422, the CLI's usage error), or null: a reason that
 * reorders itself could show a secret written backwards, which no redaction finds (probe 40b F2).
 */
export function blockReasonProblem(reason: string): string | null {
  return REORDERS.test(reason)
    ? "Must not contain bidirectional overrides, embeddings or isolates"
    : null;
}
const HOUR = 60 * MINUTE;

/**
 * A reason as stored and sealed: well-formed (a lone surrogate, sent escaped in JSON or left by a
 * cut, is stored by SQLite as U+FFFD, so the row no longer matched its seal and the block was
 * reported tampered and never enforced; probe 37a F1), and cut where the API bounds it, between
 * characters (a reason of many short secrets grows with each redaction).
 */
function storedReason(reason: string): string {
  return storedText(reason, MAX_BLOCK_REASON_LENGTH);
}

export type ViolationKind = "ratelimit" | "login" | "principal";

/** The later of two block ends, either of which may be none. */
export function laterEnd(a: number | null, b: number | null): number | null {
  return a === null || b === null ? (a ?? b) : Math.max(a, b);
}

/**
 * The /48 whose block refuses a client: none for a trusted proxy (with a hop count, any request
 * without X-Forwarded-For), which its /48's block would cut off with everyone it passes on, so it
 * is neither refused by it nor told of it (probe 90h F2).
 */
function refusingSite(client: ResolvedClient): string | null {
  return client.siteKey && !client.isTrustedProxy ? client.siteKey : null;
}

/** Whether a block's subject is a principal (a lockout) rather than a client address. */
export function isPrincipalSubject(subject: string): boolean {
  return parsePrincipalRef(subject) !== null;
}

export interface ViolationThreshold {
  /** Violations within the window that block; 0 never blocks. */
  count: number;
  windowMs: number;
}

export interface IpBlockSettings {
  thresholds: Record<ViolationKind, ViolationThreshold>;
  /**
   * Distinct /64s of an IPv6 /48 with an automatic block made within the window that block the
   * /48; 0 never does.
   */
  siteBlocks: ViolationThreshold;
  /** TTL of a /48's first, second (and later) automatic block. */
  siteEscalation: readonly number[];
  /** TTL of the first, second, third (and later) automatic block. */
  escalation: readonly number[];
  /** The same for principal lockouts: shorter, since a principal is one client, not an office. */
  lockoutEscalation: readonly number[];
  /** How far back earlier automatic blocks count towards escalation. */
  escalationLookbackMs: number;
  cacheTtlMs: number;
}

export const DEFAULT_IP_BLOCK_SETTINGS: IpBlockSettings = {
  thresholds: {
    ratelimit: { count: 5, windowMs: 10 * MINUTE },
    login: { count: 10, windowMs: 15 * MINUTE },
    principal: { count: 5, windowMs: 10 * MINUTE },
  },
  siteBlocks: { count: 16, windowMs: HOUR },
  siteEscalation: [15 * MINUTE, HOUR],
  escalation: [15 * MINUTE, HOUR, 24 * HOUR],
  lockoutEscalation: [5 * MINUTE, 15 * MINUTE, HOUR],
  escalationLookbackMs: 7 * 24 * HOUR,
  cacheTtlMs: 1000,
};

/** A block as stored; `liftedAt` is not shown (a lifted block is no longer listed). */
export type IpBlock = Omit<typeof ipBlocks.$inferSelect, "liftedAt" | "seal">;

/** A block row as read with its seal. */
type StoredBlock = SealedBlock & { seal: string | null; idText: string };

/** A sweep's place in the expiry index, what it has counted, and the last whole pass's count. */
interface Sweep {
  expiresAt: number;
  id: string;
  addresses: Set<string>;
  total: number | null;
  passes: number;
}

function freshSweep(now: number, total: number | null, passes: number): Sweep {
  return {
    expiresAt: now,
    id: String(Number.MIN_SAFE_INTEGER),
    addresses: new Set(),
    total,
    passes,
  };
}

export interface NewBlock {
  address: string;
  reason: string;
  ttlMs: number;
  source: "auto" | "admin";
  createdBy?: string | null;
  /** Whether the account or key making the block is still there (asked in its transaction). */
  creatorStands?: () => boolean;
  requestId?: string | null;
  /** The admin request that made it: its route, for the audit row (none: automatic, CLI). */
  origin?: BlockOrigin;
}

/**
 * Where an admin's block or lift came from: its route, in the audit row's `route`. The row's `ip`
 * is the subject blocked; the admin's own address is not kept there (its detail is not rewritten
 * by an erasure, which would leave it for the retention: probe 86e F4), the request id leads to the
 * access log line that has it.
 */
export interface BlockOrigin {
  route: string;
}

export interface IpBlockServiceOptions {
  sqlite: Database;
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  limiter: LimiterStore;
  /** Seals the rows this service writes, and tells the ones Palisade wrote from the rest. */
  seal: BlockSeal;
  registry?: Registry;
  settings?: Partial<IpBlockSettings>;
  /**
   * Where a violation the file could not take (its count, or the block it crossed into; locked
   * past the busy wait, disk full) is counted, as a limiter store failure that failed open.
   */
  rateLimitMetrics: RateLimitMetrics;
  /**
   * Configured secret values: an admin's reason is stored with them, and the credential shapes the
   * logs scrub, redacted, as its log line and audit row show it (probe 35d F1).
   */
  secretValues?: readonly string[];
  /**
   * The ranges no automatic block of a /48 may cover (the trusted proxies, the addresses exempt
   * from the limits): such a block would refuse them too.
   */
  siteExemptRanges?: readonly Range[];
}

/** A block in force at `$now`: not expired (an expiry that is a whole number), not lifted. */
/** Blocks a prune deletes at most. */
const PRUNE_BATCH = 1000;
const IN_FORCE = "expires_at > $now AND typeof(expires_at) = 'integer' AND lifted_at IS NULL";
/**
 * A block the list can order and name in a cursor: made at a time Palisade writes (whole ms, years
 * 0000–9999). One written into the file with a fraction, text or a time past 2^53 made the list's
 * next page 422 or the same page forever (probe 49a F1); it fails its seal, so it is left out, and
 * is no block either way.
 */
const LISTABLE_TIME = `typeof(created_at) = 'integer' AND created_at BETWEEN ${FIRST_TIME_MS} AND ${LAST_TIME_MS}`;

type ActivePageParams = { now: number; createdAt: number | null; id: string | null; limit: number };

/**
 * Blocks in force at or past which the admin list reads newest first rather than sorting them
 * (a page sorted 65,536 in 33–48 ms; read newest first past 315,536 ended ones, 110 ms).
 */
const LIST_SORTED_UP_TO = 10_000;

/**
 * The admin list's page, the index named. The id also as text (SEALED_BLOCK_COLUMNS), exactly as
 * stored (a forged one past 2^53 rounds as a JS number), and the cursor's id bound as text: SQLite
 * compares it as the integer it spells (probe 48a F1).
 */
function activePageSql(index: "ip_blocks_expires" | "ip_blocks_created"): string {
  return `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks INDEXED BY ${index}
     WHERE ${IN_FORCE} AND ${LISTABLE_TIME}
       AND ($createdAt IS NULL OR created_at < $createdAt
            OR (created_at = $createdAt AND id < $id))
     ORDER BY created_at DESC, id DESC LIMIT $limit`;
}

/** The statements of the request path (each address's read) and of automatic blocking, prepared once. */
function prepareStatements(db: AppDatabase) {
  const sqlite = db.$client;
  return preparedOnUse({
    // Every row in force, each with its seal: which of them count is decided here, not in SQL.
    loadActive: () =>
      sqlite.query<StoredBlock, { now: number }>(
        `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks WHERE ${IN_FORCE}`,
      ),
    // A page of the admin list, two ways (probe 85d F3): with few blocks in force, those read by
    // the expiry index and sorted; with many, the blocks read newest first by ip_blocks_created
    // until the page is full, which walks every ended block newer than the page's (kept a week).
    activeAfterSorted: () =>
      sqlite.query<StoredBlock, ActivePageParams>(activePageSql("ip_blocks_expires")),
    activeAfterNewest: () =>
      sqlite.query<StoredBlock, ActivePageParams>(activePageSql("ip_blocks_created")),
    inForceUpTo: () =>
      sqlite.query<{ n: number }, { now: number; limit: number }>(
        `SELECT count(*) AS n FROM (SELECT 1 FROM ip_blocks INDEXED BY ip_blocks_expires
         WHERE expires_at > $now LIMIT $limit)`,
      ),
    activeOn: () =>
      sqlite.query<StoredBlock, { address: string; now: number }>(
        `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks
         WHERE address = $address AND ${IN_FORCE}`,
      ),
    byId: () =>
      sqlite.query<StoredBlock, { id: string; now: number }>(
        `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks WHERE id = $id AND ${IN_FORCE}`,
      ),
    // Whether any block may be in force (a row Palisade wrote or not): none, and no address needs
    // a read of its own.
    anyInForce: () =>
      sqlite.query<{ one: number }, { now: number }>(
        "SELECT 1 AS one FROM ip_blocks WHERE expires_at > $now LIMIT 1",
      ),
    // The gauge's sweep: the next page of blocks in force, in the order of the expiry index
    // (ended rows, which the prune keeps a week, are never walked: by the address index one page
    // read every ended row, 0.2–1 s at each scrape; probe 84k F3). Lifted rows are returned and
    // skipped by the caller, so a page reads at most its limit whatever they number (filtered here,
    // 65,536 lifted blocks were walked in one call at every scrape: 84l F3). Only ends Palisade
    // can write (whole ms a JS number holds exactly): one past 2^53 read back rounded and held the
    // cursor on one page for good (84l F1); text sorts after them all. The id is bound as text, as
    // activeAfter's is.
    activeFrom: () =>
      sqlite.query<StoredBlock, { now: number; expiresAt: number; id: string; limit: number }>(
        `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks
         WHERE (expires_at, id) > ($expiresAt, $id)
           AND expires_at > $now AND expires_at <= ${Number.MAX_SAFE_INTEGER}
         ORDER BY expires_at, id LIMIT $limit`,
      ),
    endedOn: () =>
      sqlite.query<StoredBlock, { address: string; now: number }>(
        `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks
         WHERE address = $address AND (expires_at <= $now OR lifted_at <= $now)`,
      ),
    // A /48's /64 keys, by the address index (blockSiteIfDue).
    autoBlocksBetween: () =>
      sqlite.query<StoredBlock, { from: string; to: string; since: number }>(
        `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks INDEXED BY ip_blocks_address
         WHERE address >= $from AND address < $to
           AND source = 'auto' AND created_at > $since AND lifted_at IS NULL`,
      ),
    // A block an admin lifted was judged a mistake: it does not lengthen the next one.
    priorAutoBlocks: () =>
      sqlite.query<StoredBlock, { address: string; since: number }>(
        `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks
         WHERE address = $address AND source = 'auto' AND created_at > $since AND lifted_at IS NULL`,
      ),
    insertBlock: () =>
      sqlite.query<{ id: number }, Omit<SealedBlock, "liftedAt"> & { seal: string }>(
        `INSERT INTO ip_blocks (id, address, reason, source, created_by, created_at, expires_at, seal)
         VALUES ($id, $address, $reason, $source, $createdBy, $createdAt, $expiresAt, $seal)
         ON CONFLICT (id) DO NOTHING RETURNING id`,
      ),
    reseal: () =>
      sqlite.query<
        never,
        { id: number; seal: string; createdBy: string | null; liftedAt: number | null }
      >(
        "UPDATE ip_blocks SET seal = $seal, created_by = $createdBy, lifted_at = $liftedAt WHERE id = $id",
      ),
  });
}

/** What a list or an export shows of a block. */
function shown({ id, address, reason, source, createdBy, createdAt, expiresAt }: SealedBlock) {
  return {
    id,
    address,
    reason,
    source: source as IpBlock["source"],
    createdBy,
    createdAt,
    expiresAt,
  };
}

export class IpBlockService {
  private readonly settings: IpBlockSettings;
  private readonly violationPolicies: Record<ViolationKind, Policy>;
  /**
   * What the file said of each subject last asked about (when its longest block in force ends, or
   * null) and when it was read; about the last SUBJECTS_REMEMBERED.
   */
  private readonly known = new RecentEntries<{ until: number | null; readAt: number }>(
    SUBJECTS_REMEMBERED,
  );
  /** Whether the file held any block in force when last asked, and when (see blocksMayApply). */
  private anyInForce = { value: true, readAt: Number.NEGATIVE_INFINITY };
  /** The gauge's sweep: where its pass is, what it has counted, and the last pass's count. */
  private sweep: Sweep = freshSweep(Number.NEGATIVE_INFINITY, null, 0);
  private readonly db: AppDatabase;
  private readonly statements: ReturnType<typeof prepareStatements>;
  private readonly tampered: BlockTamperReporter;
  /** Rows found failing their seals in a transaction: reported once it has ended (see `intact`). */
  private unreported: string[] = [];
  private reportScheduled = false;
  /**
   * The rows the sweep read (by id, seal, subject and end) and whether each matched its seal: a
   * later pass checks only rows it has not seen so. Rebuilt each pass, so at most the blocks in
   * force.
   */
  private checked = new Map<string, boolean>();
  private checkedThisPass = new Map<string, boolean>();

  private readonly scrub: (text: string) => string;

  constructor(private readonly options: IpBlockServiceOptions) {
    this.settings = { ...DEFAULT_IP_BLOCK_SETTINGS, ...options.settings };
    this.scrub = secretScrubber(options.secretValues ?? []);
    const policy = (kind: ViolationKind): Policy => {
      const { count, windowMs } = this.settings.thresholds[kind];
      // The count-th violation is the one refused, and refusal is what blocks: with a count of 1,
      // the first (it was admitted, and the address blocked only at its second: probe 50a F3).
      const limit = Math.max(0, count - 1);
      return {
        id: `violations.${kind}`,
        limit,
        windowMs,
        burstLimit: limit,
        failClosed: false,
      };
    };
    this.violationPolicies = {
      ratelimit: policy("ratelimit"),
      login: policy("login"),
      principal: policy("principal"),
    };
    this.db = drizzleOf(options.sqlite);
    this.statements = prepareStatements(this.db);
    this.tampered = blockTamperReporter(options);
    if (options.registry) {
      const service = this;
      new Gauge({
        name: METRIC.ipBlocksActive,
        help: "Client addresses blocked right now",
        registers: [options.registry],
        collect() {
          this.set(service.activeCount());
        },
      });
    }
  }

  /** When the block on this address ends, or null when it is not blocked. */
  blockedUntil(address: string): number | null {
    const now = this.options.clock.now();
    let entry = this.known.get(address);
    if (entry === undefined || elapsedMs(now, entry.readAt) >= this.settings.cacheTtlMs) {
      const mayApply = this.blocksMayApply(now);
      const until = mayApply ? this.inForceUntil(address, now) : null;
      this.reportUnreported();
      // A block in force here that is gone before its end was lifted by another process (a CLI
      // command, another instance): forget its violations in this process's store as well.
      if (entry?.until != null && entry.until > now && until === null) {
        void this.forgetViolations(address);
      }
      // With no block anywhere, that reading answers every subject, and is as old as it is (kept
      // from this request instead, a block made elsewhere just after it was missed for up to two
      // seconds: probe 84k F1). A subject remembered with it only repeats it: a flood of new
      // addresses filled the memory to its 50,000 subjects for nothing (RSS after 300,000 clients,
      // one request each, 166 MB against 138 before the subjects were kept; the bench's million
      // read 166 MB, its target under 150).
      if (!mayApply) {
        this.known.delete(address);
        return null;
      }
      entry = { until, readAt: now };
      this.remember(address, entry);
    }
    return entry.until !== null && entry.until > now ? entry.until : null;
  }

  /**
   * When the block on this subject ends, as the file says now (null: none): for a refusal's
   * Retry-After, which must not miss a block another process wrote since this one's copy was
   * loaded (up to a second old; probe 54b F1). One indexed read; what it finds is kept.
   */
  blockedUntilNow(subject: string): number | null {
    const now = this.options.clock.now();
    const until = this.inForceUntil(subject, now);
    if (until !== null) this.inForceHere(subject, until, now);
    return until;
  }

  /**
   * The client addresses blocked, as the last whole pass of the sweep counted them (each scrape
   * moves it on by at most SWEEP_MS of reading, so a table of tens of thousands of blocks is counted
   * over several scrapes rather than in one long hold of the event loop); before a process's first
   * pass ends, what it has counted so far.
   */
  activeCount(): number {
    const now = this.options.clock.now();
    const deadline = performance.now() + SWEEP_MS;
    if (this.sweep.expiresAt === Number.NEGATIVE_INFINITY) this.sweep = freshSweep(now, null, 0);
    const passes = this.sweep.passes;
    while (this.sweep.passes === passes && performance.now() < deadline) {
      this.sweepPage(now, deadline);
    }
    this.reportUnreported();
    return this.sweep.total ?? this.sweep.addresses.size;
  }

  /**
   * Reads the sweep's next page, row by row until `deadline`; at the index's end the pass's count
   * becomes the gauge's. A row is checked against its seal only when the sweep has not seen it
   * as it is now.
   */
  private sweepPage(now: number, deadline: number): void {
    const sweep = this.sweep;
    const rows = this.statements.activeFrom.all({
      now,
      expiresAt: sweep.expiresAt,
      id: sweep.id,
      limit: SWEEP_PAGE,
    });
    for (const row of rows) {
      sweep.expiresAt = row.expiresAt;
      sweep.id = row.idText;
      if (row.liftedAt === null && Number.isInteger(row.expiresAt)) {
        // The row as its seal reads it, with the seal and the id as stored, as JSON (a join read
        // NULL and '' alike: 84l F2); cheaper than the seal itself.
        const seen = JSON.stringify([row.idText, row.seal, ...sealedFields(row)]);
        const intact = this.checked.get(seen) ?? this.checkedThisPass.get(seen) ?? this.intact(row);
        this.checkedThisPass.set(seen, intact);
        if (intact && !isPrincipalSubject(row.address)) sweep.addresses.add(row.address);
      }
      if (performance.now() >= deadline) return;
    }
    if (rows.length === SWEEP_PAGE) return;
    this.sweep = freshSweep(now, sweep.addresses.size, sweep.passes + 1);
    this.checked = this.checkedThisPass;
    this.checkedThisPass = new Map();
  }

  /**
   * Whether any block may be in force, as the file said within the last `cacheTtlMs`: with none (the
   * usual case), a client's first request costs no read of its own, as before blocks were read per
   * subject; a flood of new addresses with no block anywhere pays one indexed read a second.
   */
  private blocksMayApply(now: number): boolean {
    if (elapsedMs(now, this.anyInForce.readAt) >= this.settings.cacheTtlMs) {
      this.anyInForce = { value: this.statements.anyInForce.get({ now }) !== null, readAt: now };
    }
    return this.anyInForce.value;
  }

  /** Keeps what the file said of a subject, the oldest subjects going past the bound. */
  private remember(subject: string, entry: { until: number | null; readAt: number }): void {
    this.known.set(subject, entry);
  }

  /** A block this process wrote or read in force: applied here at once, until its end. */
  private inForceHere(subject: string, until: number, now: number): void {
    this.anyInForce.value = true;
    const known = this.known.get(subject)?.until ?? null;
    this.remember(subject, { until: Math.max(until, known ?? 0), readAt: now });
  }

  /**
   * Makes a block, or throws ActorGone: an admin account erased meanwhile (its credential still
   * accepted for up to a second by a process not yet told) makes no block, whose row would keep its
   * id. Asked in the inserting transaction, so the erasure is wholly before it or after it (and
   * then gives the row the pseudonym).
   */
  block(block: NewBlock): IpBlock {
    const now = this.options.clock.now();
    const row = this.db.transaction(
      () => {
        if (block.creatorStands?.() === false) throw new ActorGone();
        return this.insertAudited(block, now);
      },
      { behavior: "immediate" },
    );
    this.blocked(row);
    return row;
  }

  /**
   * An automatic block of `subject`, as long as the ladder says for its earlier automatic blocks,
   * unless a block is in force on it already. Both are read in the transaction that inserts it:
   * another process on the file may have blocked the subject for this same offence a moment ago,
   * before this one's copy of the blocks (refreshed each second) shows it. Counting that block as an
   * earlier offence would make one offence two blocks, the second a rung longer.
   */
  private autoBlock(
    subject: string,
    reason: string,
    ladder: readonly number[],
    requestId: string | null,
  ): IpBlock | null {
    const now = this.options.clock.now();
    const outcome = this.db.transaction(
      () => {
        // A principal whose account an erasure (in any process) took meanwhile — its token still
        // accepted for up to a second elsewhere — is not locked out: the row would keep its id.
        if (isPrincipalSubject(subject) && this.options.audit.erasedAs(subject) !== null) {
          return { erased: true };
        }
        const until = this.inForceUntil(subject, now);
        if (until !== null) return { inForceUntil: until };
        const earlier = this.statements.priorAutoBlocks
          .all({ address: subject, since: now - this.settings.escalationLookbackMs })
          .filter((row) => this.intact(row)).length;
        const ttlMs = ladder[Math.min(earlier, ladder.length - 1)]!;
        const block = { address: subject, reason, ttlMs, source: "auto" as const, requestId };
        return { row: this.insertAudited(block, now) };
      },
      { behavior: "immediate" },
    );
    if ("erased" in outcome) return null;
    if (outcome.row) {
      this.blocked(outcome.row);
      return outcome.row;
    }
    this.inForceHere(subject, outcome.inForceUntil, now);
    return null;
  }

  /** When the subject's latest intact block ended, expired or lifted, as the file says (null: none). */
  private lastBlockEnded(subject: string, now: number): number | null {
    let ended: number | null = null;
    for (const row of this.statements.endedOn.all({ address: subject, now })) {
      if (!this.intact(row)) continue;
      const end = row.liftedAt === null ? row.expiresAt : Math.min(row.liftedAt, row.expiresAt);
      if (end <= now) ended = Math.max(ended ?? end, end);
    }
    return ended;
  }

  /** When the longest intact block in force on a subject ends (null: none), as the file says now. */
  private inForceUntil(subject: string, now: number): number | null {
    let until: number | null = null;
    for (const row of this.statements.activeOn.all({ address: subject, now })) {
      if (this.intact(row)) until = Math.max(until ?? row.expiresAt, row.expiresAt);
    }
    return until;
  }

  /**
   * Whether a row matches its seal; one that does not is reported, all of one read together. Palisade
   * writes ids JavaScript counts exactly: a row whose id is past them was written into the file
   * (and read back rounded). Found inside a transaction, the rows are reported after it: a report
   * written in it would be rolled back with it. Outside one, the read reports them at its end.
   */
  private intact(row: StoredBlock): boolean {
    if (Number.isSafeInteger(row.id) && this.options.seal.intact(row)) return true;
    this.unreported.push(row.idText);
    if (this.options.sqlite.inTransaction && !this.reportScheduled) {
      this.reportScheduled = true;
      afterTransaction(this.options.sqlite, () => {
        this.reportScheduled = false;
        this.reportUnreported();
      });
    }
    return false;
  }

  private reportUnreported(): void {
    if (this.unreported.length === 0 || this.options.sqlite.inTransaction) return;
    const ids = this.unreported;
    this.unreported = [];
    this.tampered.report(ids);
  }

  /** Inserts a block, sealed, and its audit row; inside the caller's transaction. */
  private insertAudited(block: NewBlock, now: number): IpBlock {
    const row = {
      address: block.address,
      reason: storedReason(scrubAnySpelling(block.reason, this.scrub)),
      source: block.source,
      createdBy: block.createdBy ?? null,
      createdAt: now,
      expiresAt: now + block.ttlMs,
    };
    // The id is sealed too, so it is drawn here (db/random-id), not taken from the file's sequence.
    const inserted = insertWithRandomId(
      (id) => {
        const drawn = { id, ...row, liftedAt: null };
        return this.statements.insertBlock.get({ ...drawn, seal: this.options.seal.of(drawn) })
          ? drawn
          : null;
      },
      () => new Error("a block's row could not be written: ip_blocks ignored it"),
    );
    const lockout = isPrincipalSubject(block.address);
    this.options.audit.record({
      type: lockout ? "auth.locked_out" : "ip.blocked",
      outcome: "success",
      // A lockout's subject is a principal: it is the actor the row is about, not an address.
      actor: lockout ? block.address : (block.createdBy ?? "system"),
      ip: lockout ? null : block.address,
      route: block.origin?.route ?? null,
      requestId: block.requestId ?? null,
      detail: { reason: row.reason, source: block.source, ttlSeconds: block.ttlMs / 1000 },
      at: now,
    });
    return shown(inserted);
  }

  /** A block just written: in force here at once, and logged. */
  private blocked(row: IpBlock): void {
    this.inForceHere(row.address, row.expiresAt, this.options.clock.now());
    this.options.logger.warn(
      { address: row.address, reason: row.reason, source: row.source, expiresAt: row.expiresAt },
      isPrincipalSubject(row.address) ? "principal locked out" : "ip blocked",
    );
  }

  /**
   * Ends every active block on the address now, and forgets the violations counted against it: one
   * more failure after a lift must not block it again at once (the count that made an automatic
   * block was still there, so the next one re-blocked it, escalated). Returns how many were lifted,
   * once this process has tried to forget the counts. Every other process on the file forgets them
   * too in its own store when it sees the block gone (refresh): a CLI command may not have the
   * service's REDIS_URL, or reach Redis.
   */
  /**
   * Lifts the blocks in force on `address`. `liftedByStands` (an admin's request) is asked in the
   * lifting transaction, as `block` asks its creator: ActorGone if that credential was revoked or
   * logged out after the auth stage let the request by (probe 38c F1).
   */
  async lift(
    address: string,
    liftedBy: string | null,
    requestId?: string | null,
    liftedByStands?: () => boolean,
    origin?: BlockOrigin,
  ): Promise<number> {
    const lifted = this.liftNow(address, liftedBy, requestId, liftedByStands, origin);
    await this.forgetViolations(address);
    return lifted;
  }

  /** Resets the violation counters of a block's subject; a store that fails is logged, not thrown. */
  private async forgetViolations(subject: string): Promise<void> {
    const principal = isPrincipalSubject(subject);
    // A /48's block counts no violations of its own: its count is its /64s' blocks since it ended.
    if (subject.endsWith(`/${SITE_PREFIX_BITS}`)) return;
    const counted: [ViolationKind, string][] = principal
      ? [["principal", subject]]
      : [
          ["ratelimit", `ip:${subject}`],
          ["login", `ip:${subject}`],
        ];
    try {
      await Promise.all(
        counted.map(([kind, key]) => this.options.limiter.reset(this.violationPolicies[kind], key)),
      );
    } catch (error) {
      this.options.logger.warn(
        { err: error, subject },
        "a lifted block's violation count could not be reset here; the processes that serve reset it in their own store",
      );
    }
  }

  private liftNow(
    address: string,
    liftedBy: string | null,
    requestId?: string | null,
    liftedByStands?: () => boolean,
    origin?: BlockOrigin,
  ): number {
    const now = this.options.clock.now();
    const { audit } = this.options;
    const lifted = this.db.transaction(
      () => {
        if (liftedByStands?.() === false) throw new ActorGone();
        // Only rows Palisade wrote: one that fails its seal blocks nothing already, and is left as
        // it is for whoever investigates.
        const rows = this.statements.activeOn
          .all({ address, now })
          .filter((row) => this.intact(row));
        for (const row of rows) this.resealed({ ...row, liftedAt: now });
        const changes = rows.length;
        if (changes > 0) {
          const lockout = isPrincipalSubject(address);
          audit.record({
            type: lockout ? "auth.lockout_lifted" : "ip.unblocked",
            outcome: "success",
            actor: liftedBy ?? "system",
            ip: lockout ? null : address,
            route: origin?.route ?? null,
            detail: lockout ? { subject: address } : undefined,
            requestId: requestId ?? null,
            at: now,
          });
        }
        return changes;
      },
      { behavior: "immediate" },
    );
    this.known.delete(address);
    return lifted;
  }

  /** A change to a block's columns, written with the seal of the row it makes. */
  private resealed(row: SealedBlock): void {
    this.statements.reseal.run({
      id: row.id,
      seal: this.options.seal.of(row),
      createdBy: row.createdBy,
      liftedAt: row.liftedAt,
    });
  }

  /**
   * The block in force with this id (as the API names it), if Palisade made it: one indexed read, not
   * the whole list (an admin's lift read every block in force to find one).
   */
  activeBlock(id: string): IpBlock | null {
    // As the API shows ids: `0123` or `1e3` names no block, though SQLite would read them as one.
    if (!/^[1-9][0-9]{0,15}$/.test(id) || !Number.isSafeInteger(Number(id))) return null;
    const row = this.statements.byId.get({ id, now: this.options.clock.now() });
    const found = row !== null && this.intact(row) ? shown(row) : null;
    this.reportUnreported();
    return found;
  }

  /** The blocks in force that Palisade made, newest first. */
  listActive(): IpBlock[] {
    const listed = this.statements.loadActive
      .all({ now: this.options.clock.now() })
      .filter((row) => this.intact(row))
      .sort((a, b) => b.createdAt - a.createdAt || b.id - a.id)
      .map(shown);
    this.reportUnreported();
    return listed;
  }

  /**
   * The blocks in force that Palisade made, newest first: `limit` after `cursor` (the last block of
   * the page before), with the cursor of the next page. A block that fails its seal is left out
   * (reported); the cursor still moves past it.
   */
  activePage(page: { cursor?: { createdAt: number; id: string }; limit: number }): {
    blocks: IpBlock[];
    nextCursor: string | null;
  } {
    const { cursor, limit } = page;
    const now = this.options.clock.now();
    const many =
      (this.statements.inForceUpTo.get({ now, limit: LIST_SORTED_UP_TO })?.n ?? 0) >=
      LIST_SORTED_UP_TO;
    const statement = many ? this.statements.activeAfterNewest : this.statements.activeAfterSorted;
    const rows = statement.all({
      now,
      createdAt: cursor?.createdAt ?? null,
      id: cursor?.id ?? null,
      limit: limit + 1,
    });
    const read = rows.slice(0, limit);
    const blocks = read.filter((row) => this.intact(row)).map(shown);
    this.reportUnreported();
    const last = read.at(-1);
    return {
      blocks,
      nextCursor: rows.length > limit && last ? encodeCursor(last.createdAt, last.idText) : null,
    };
  }

  /**
   * What the blocks hold about a person acting as `actors` (`user:<id>` and their keys), for their
   * privacy export: the lockouts of those principals, and the blocks they made — without the
   * addresses blocked, which are other people's.
   */
  heldFor(actors: readonly string[]) {
    if (actors.length === 0) return { lockouts: [], blocksMade: [] };
    const lockouts = this.rowsWhere("address", actors).map(
      ({ id, address, reason, createdAt, expiresAt, liftedAt }) => ({
        id,
        principal: address,
        reason,
        createdAt,
        expiresAt,
        liftedAt,
      }),
    );
    const blocksMade = this.rowsWhere("created_by", actors).map(
      ({ id, createdBy, reason, source, createdAt, expiresAt, liftedAt }) => ({
        id,
        createdBy,
        reason,
        source,
        createdAt,
        expiresAt,
        liftedAt,
      }),
    );
    this.reportUnreported();
    return { lockouts, blocksMade };
  }

  /** The intact rows whose `column` is one of `values`, oldest first. */
  private rowsWhere(column: "address" | "created_by", values: readonly string[]): SealedBlock[] {
    const placeholders = values.map(() => "?").join(", ");
    return this.options.sqlite
      .query<StoredBlock, string[]>(
        `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks WHERE ${column} IN (${placeholders})
         ORDER BY created_at, id`,
      )
      .all(...values)
      .filter((row) => this.intact(row));
  }

  /**
   * Erasure (inside its transaction): the blocks the person made name the pseudonym instead, as the
   * audit log's rows of them do; their principals' lockouts go, since no one is left to lock out
   * and the row would name them.
   */
  eraseActors(actors: readonly string[], pseudonym: string): void {
    if (actors.length === 0) return;
    // Every row the person made names the pseudonym, sealed again where it matched its seal: one
    // that did not still must not keep their id, and stays unsealed.
    for (const row of this.rowsWhere("created_by", actors)) {
      this.resealed({ ...row, createdBy: pseudonym });
    }
    this.db
      .update(ipBlocks)
      .set({ createdBy: pseudonym })
      .where(inArray(ipBlocks.createdBy, [...actors]))
      .run();
    this.db
      .delete(ipBlocks)
      .where(inArray(ipBlocks.address, [...actors]))
      .run();
    for (const actor of actors) this.known.delete(actor);
  }

  /**
   * Counts one violation by this client; blocks it when the threshold is crossed. Returns the new
   * block, if one was made.
   */
  async recordViolation(
    kind: Exclude<ViolationKind, "principal">,
    client: ResolvedClient,
    requestId: string | null = null,
  ): Promise<IpBlock | null> {
    // A trusted proxy blocked refuses every client it passes on without a usable X-Forwarded-For
    // (its health checks, a misconfigured hop's clients), as the admin API refuses to (probe 75c F2).
    if (client.address === null || client.isTrustedProxy) return null;
    const site = client.siteKey && this.siteMayBeBlocked(client.address) ? client.siteKey : null;
    // A refusal in flight when its /48 was blocked makes no /64 block, nor its row (probe 90a F5).
    if (site !== null && this.blockedUntilNow(site) !== null) return null;
    const block = await this.countViolation(kind, client.key, `ip:${client.key}`, requestId);
    if (block === null || site === null) return block;
    let siteBlock: IpBlock | null = null;
    try {
      siteBlock = this.blockSiteIfDue(site, client.address, requestId);
    } catch (error) {
      this.lost(error, requestId, "violations.site", "a block was not made");
    }
    // The refusal is told the later end: the /48's, if it was just blocked for longer (90a F3).
    return siteBlock !== null && siteBlock.expiresAt > block.expiresAt ? siteBlock : block;
  }

  /**
   * When the block on a client ends, its /64's or its /48's, whichever is later (null: neither),
   * as this process last read them (blockedUntil): what refuses its request. A /64 blocked for a
   * day inside a /48 blocked for 15 minutes was told to come back in 15 (probe 90a F2).
   */
  clientBlockedUntil(client: ResolvedClient): number | null {
    const site = refusingSite(client);
    return laterEnd(this.blockedUntil(client.key), site === null ? null : this.blockedUntil(site));
  }

  /** The same, as the file says now (blockedUntilNow): for a refusal's Retry-After. */
  clientBlockedUntilNow(client: ResolvedClient): number | null {
    const site = refusingSite(client);
    return laterEnd(
      this.blockedUntilNow(client.key),
      site === null ? null : this.blockedUntilNow(site),
    );
  }

  /**
   * Blocks the /48 `site` (around `address`, one of its /64s just blocked) once `siteBlocks.count`
   * distinct /64s of it hold an automatic block made within the window and since the /48's last
   * block ended, none lifted: one /64 blocked again, or lifted by an admin, is not several (probe
   * 90a F1, F4). Read from the blocks, so every process on the file counts the same ones.
   */
  private blockSiteIfDue(site: string, address: Address, requestId: string | null): IpBlock | null {
    const { count, windowMs } = this.settings.siteBlocks;
    if (count === 0) return null;
    const now = this.options.clock.now();
    const ended = this.lastBlockEnded(site, now);
    const since = Math.max(now - windowMs, ended ?? Number.NEGATIVE_INFINITY);
    // A /48's /64 keys are spelt as its three groups written out and a fourth (`2001:db8:0:5::/64`),
    // or, the fourth zero, as the /48 is (`2001:db8::/64`): one range of the address index, and one
    // address. Each row found is checked against the /48 all the same.
    const groups = (address as ipaddr.IPv6).parts
      .slice(0, 3)
      .map((part) => part.toString(16))
      .join(":");
    const rows = [
      ...this.statements.autoBlocksBetween.all({ from: `${groups}:`, to: `${groups};`, since }),
      ...this.statements.priorAutoBlocks.all({ address: `${site.slice(0, -3)}/64`, since }),
    ];
    const blocked = new Set<string>();
    for (const row of rows) {
      if (!row.address.endsWith("/64") || blocked.has(row.address)) continue;
      if (siteOfKey(row.address) === site && this.intact(row)) {
        blocked.add(row.address);
      }
    }
    this.reportUnreported();
    if (blocked.size < count) return null;
    return this.autoBlock(
      site,
      `${blocked.size} of its /64s blocked automatically in ${windowMs / MINUTE} min`,
      this.settings.siteEscalation,
      requestId,
    );
  }

  /** Whether the /48 around an IPv6 address covers none of the exempt ranges (see the module). */
  private siteMayBeBlocked(address: NonNullable<ResolvedClient["address"]>): boolean {
    for (const [start, bits] of this.options.siteExemptRanges ?? []) {
      if (start.kind() !== "ipv6") continue;
      const overlaps =
        bits <= SITE_PREFIX_BITS
          ? address.match(start, bits)
          : start.match(address, SITE_PREFIX_BITS);
      if (overlaps) return false;
    }
    return true;
  }

  /**
   * Counts one rate-limit refusal of a signed-in principal (`user:…` or `key:…`); locks it out
   * when the threshold is crossed. Returns the lockout, if one was made.
   */
  recordPrincipalViolation(principal: string, requestId: string | null = null) {
    return this.countViolation("principal", principal, principal, requestId);
  }

  private async countViolation(
    kind: ViolationKind,
    subject: string,
    counterKey: string,
    requestId: string | null,
  ): Promise<IpBlock | null> {
    const { count, windowMs } = this.settings.thresholds[kind];
    if (count === 0) return null;
    const now = this.options.clock.now();
    const policy = this.violationPolicies[kind];
    // Blocked already (a refusal that was in flight when the block was made, here or in another
    // process on the file: read from the file, refusals only): no step towards the next block.
    if (this.blockedUntilNow(subject) !== null) return null;
    // Counted from the end of the subject's last block: the violations that made it are used up.
    // Their window outlasts a first block or lockout (10 minutes against 5), and one refusal after
    // a lockout was waited out locked the principal out again, a rung longer (probe 58b F2).
    // Escalation counts blocks, not violations. A VM on a file of its own sharing the counts in
    // Redis, which has not seen the block, still counts on the counter that made it, and blocks
    // at its next refusal there (README, Scale-out).
    const ended = this.lastBlockEnded(subject, now);
    const countedAs = ended === null ? counterKey : `${counterKey}~${ended}`;
    // The refusal or failed login that made this violation stands as answered (a 429 stays a 429,
    // not a 503) whatever the file does: while it cannot be written, the violation's count or the
    // block it crossed into is lost (the count stays over its threshold, so the next violation
    // once the file is back makes the block).
    let outcome: LimitOutcome | undefined;
    try {
      [outcome] = await this.options.limiter.check([{ policy, key: countedAs, now }]);
    } catch (error) {
      this.lost(error, requestId, policy.id, "a violation was not counted");
      return null;
    }
    if (outcome?.admitted !== false) return null;
    if (this.blockedUntil(subject) !== null) return null;
    const ladder =
      kind === "principal" ? this.settings.lockoutEscalation : this.settings.escalation;
    // Wrong /metrics tokens count as failed logins (plugins/metrics): one counter, so the reason names both.
    const what = kind === "login" ? "failed logins or /metrics tokens" : "rate-limit refusals";
    try {
      return this.autoBlock(
        subject,
        `${count} ${what} in ${windowMs / MINUTE} min`,
        ladder,
        requestId,
      );
    } catch (error) {
      this.lost(error, requestId, policy.id, "a block was not made");
      return null;
    }
  }

  private lost(error: unknown, requestId: string | null, policy: string, lost: string): void {
    const { rateLimitMetrics: metrics, logger } = this.options;
    limiterFailed(error, { metrics, logger, requestId, failClosed: false, policy, lost });
  }

  /** Deletes blocks that ended longer ago than escalation looks back. Bounded per call. */
  prune(now: number): number {
    const cutoff = now - this.settings.escalationLookbackMs;
    // Ended before the cutoff: expired, or lifted, before it. An end that is not a time (Palisade
    // writes only integers) was written into the file, blocks nothing, and would never end. Each
    // found through its own index: one statement with an OR read every block.
    const among = (condition: SQL) =>
      this.db.select({ id: ipBlocks.id }).from(ipBlocks).where(condition).limit(PRUNE_BATCH);
    const ended = sql`SELECT id FROM (${among(lt(ipBlocks.expiresAt, cutoff))})
      UNION SELECT id FROM (${among(lt(ipBlocks.liftedAt, cutoff))})
      UNION SELECT id FROM (${among(blockEndUnwritten(ipBlocks.expiresAt))})
      LIMIT ${PRUNE_BATCH}`;
    return this.db
      .delete(ipBlocks)
      .where(sql`${ipBlocks.id} IN (${ended})`)
      .returning({ id: ipBlocks.id })
      .all().length;
  }
}
