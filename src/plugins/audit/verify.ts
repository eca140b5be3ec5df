/**
 * @module
 * Verifying the keyed audit chain, as `audit:verify` does.
 *
 * The walk starts at the newest retention checkpoint (its MAC must verify; without one, at the
 * genesis hash and id 1) and checks every kept row in id order: ids follow on without a gap, each
 * row names the previous row's hash, its own hash is the HMAC of its fields, and its actor and
 * address either still match their salted commitment or were rewritten by an authenticated
 * erasure. The last row reached is the head: its hash and id (the number of rows the chain has
 * ever held) are what the service logs as an anchor. Given an anchor from the logs, the walk also
 * proves that the anchored row is still there with the anchored hash, which is the only way to
 * notice that the newest rows were deleted.
 */
import type { Database } from "bun:sqlite";
import { and, asc, desc, gt, lte, type SQL, sql } from "drizzle-orm";
import { drizzleOf } from "../../db/client";
import { auditCheckpoints, auditEvents } from "../../db/schema";
import { spellOut } from "../../logging/spell-out";
import { type AuditKeys, commitsToDetail, GENESIS_HASH, matchesCommit } from "./chain";
import { principalsNamed } from "./events";

export type AuditRow = typeof auditEvents.$inferSelect;

/** The chain's newest point: the hash of row `count` (the number of rows ever appended). */
export interface AuditHead {
  hash: string;
  count: number;
}

export type VerifyResult =
  | { ok: true; checked: number; head: AuditHead }
  | {
      ok: false;
      checked: number;
      where: string;
      badId: number | null;
      reason: string;
      /** The chain itself verified; the anchor given does not match it. */
      anchor?: true;
    };

/**
 * A failed verification in one line: where the chain broke and how many rows before it verified,
 * or, when every row verified and only the anchor does not match, that.
 */
export function describeFailure(result: Extract<VerifyResult, { ok: false }>): string {
  return result.anchor
    ? `the chain's ${result.checked} rows verify, but ${result.where} does not match the anchor (${result.reason})`
    : `chain broken at ${result.where} (${result.reason}); ${result.checked} rows before it verified`;
}

export interface VerifyOptions {
  /** A head emitted earlier in the logs: it must still be part of the chain. */
  anchor?: AuditHead;
  /** Stop after this row (retention checks only the rows it is about to delete). */
  untilId?: number;
}

type CheckpointRow = typeof auditCheckpoints.$inferSelect;

/** Rows read per query while walking: memory stays bounded however long the chain. */
const WALK_PAGE = 1000;
/** SQLite's largest rowid, exactly (a number would round it to 2^63, past every integer). */
const LAST_ROWID = 9_223_372_036_854_775_807n;

export function latestCheckpoint(sqlite: Database): CheckpointRow | null {
  return (
    drizzleOf(sqlite)
      .select()
      .from(auditCheckpoints)
      .orderBy(desc(auditCheckpoints.id))
      .limit(1)
      .get() ?? null
  );
}

/** Why a row does not belong to the chain, or null when it does. */
function rowFault(keys: AuditKeys, row: AuditRow, expectedId: number, expectedPrev: string) {
  if (row.keyId === null) {
    return "it is in the unkeyed pre-upgrade form: written before the upgrade and not sealed by a start since, or altered";
  }
  if (row.keyId !== keys.keyId) {
    // As the file holds it: a BLOB as `x'…'`, not its bytes joined by commas (probe 82i N1).
    return `it was keyed with another AUDIT_SECRET_KEY (key id ${spellOut(row.keyId, 32)}, this one is ${keys.keyId}), or altered`;
  }
  if (row.id !== expectedId) {
    return row.id > expectedId
      ? `rows ${expectedId} to ${row.id - 1} before it are missing`
      : "its id is out of order";
  }
  if (row.prevHash !== expectedPrev) return "a row before it was removed or altered";
  return contentFault(keys, row);
}

/**
 * What is wrong with a row read alone (its place in the chain aside): its keyed hash over its
 * fields, then its actor, address and detail against their commitment or the erasure's record.
 */
function contentFault(keys: AuditKeys, row: AuditRow): string | null {
  // Timing does not matter here: the row and the hash are both in the file being checked.
  if (keys.rowHash(row.prevHash, row) !== row.hash) return "its fields were altered";
  const what = commitsToDetail(row.subjectCommit) ? "actor, address or detail" : "actor or address";
  if (row.subjectSalt !== null) {
    if (row.erasureMac !== null) return "its erasure record was altered";
    if (!matchesCommit({ ...row, subjectSalt: row.subjectSalt })) return `its ${what} was altered`;
  } else if (row.erasureMac === null || keys.erasureMac(row) !== row.erasureMac) {
    return `its ${what} was rewritten without an authenticated erasure`;
  }
  return null;
}

/**
 * Whether a row read alone is as Palisade wrote it, or as an authenticated erasure rewrote it:
 * keyed with this AUDIT_SECRET_KEY, its hash and its subject matching. What a privacy export shows
 * of the log must be that (probe 38b F6: a row whose actor was rewritten in the file put someone
 * else's event, their address with it, into another user's export).
 */
export function rowVouched(keys: AuditKeys, row: AuditRow): boolean {
  return row.keyId === keys.keyId && contentFault(keys, row) === null;
}

/**
 * Walks the chain from the newest checkpoint; the first inconsistency is reported. One read
 * transaction, so the checkpoint and every page of rows come from the same snapshot however other
 * processes append or prune meanwhile (inside a caller's transaction: a savepoint of it).
 */
export function verifyAuditChain(
  sqlite: Database,
  keys: AuditKeys,
  options: VerifyOptions = {},
): VerifyResult {
  return drizzleOf(sqlite).transaction(() => walkChain(sqlite, keys, options));
}

/**
 * The rows with id up to `untilId` (every row without it, whatever its id: bounded by what
 * JavaScript counts exactly, a row written into the file past 2^53 was never read, and the chain
 * read as intact; probe 58a F3), in id order, read a page at a time.
 */
function* rowsUpTo(sqlite: Database, untilId: number | null): Generator<AuditRow> {
  // Two statements rather than one with `? IS NULL OR`: SQLite then scans from the first row for
  // every page, and a long log's walk grows with the square of its rows.
  const page = (from: SQL | undefined) =>
    drizzleOf(sqlite)
      .select()
      .from(auditEvents)
      .where(and(from, lte(auditEvents.id, sql.placeholder("until"))))
      .orderBy(asc(auditEvents.id))
      .limit(WALK_PAGE)
      .prepare();
  const first = page(undefined);
  const next = page(gt(auditEvents.id, sql.placeholder("after")));
  const until = untilId ?? LAST_ROWID;
  let rows = first.all({ until });
  for (;;) {
    yield* rows;
    if (rows.length < WALK_PAGE) return;
    const last = rows.at(-1)!.id;
    // A rounded id would read its page again or skip rows: the walk stops at it (walkChain).
    if (!Number.isSafeInteger(last)) return;
    rows = next.all({ after: last, until });
  }
}

/** The id of the first row after `after` (any row without it) as the file holds it. */
function storedIdAfter(sqlite: Database, after: number | null): string {
  const row = sqlite
    .query<{ id: string }, [number | null]>(
      "SELECT CAST(id AS TEXT) AS id FROM audit_events WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT 1",
    )
    .get(after);
  return row?.id ?? "?";
}

/**
 * Rows put back from a copy taken before an erasure: each matches its own hash and commitment,
 * so no row read alone tells (probe 90l F3: an erased account's rows copied back, and the log
 * verified). The chain still holds the erasure's `privacy.erased` row, whose actor is the
 * account's keyed pseudonym: a row naming the account by its id after that (as its actor, or in
 * its detail as the erasure rewrites it: 90n F2) is one put back, or one of an erasure still being
 * written, whose rows are rewritten a batch at a time (seconds, or until the next maintenance run
 * after a stop). The erasure's record (`audit_erased_actors`) cannot tell the two apart: it stays
 * once the erasure is done (90n F1: left in place, it excused rows put back). Accounts only: a
 * key's rows name the key, whose owner the log does not say.
 */
class ErasuresPutBack {
  private readonly erased = new Set<string>();
  /** An account's keyed pseudonym, and the first row naming the account by its id. */
  private readonly named = new Map<string, number>();
  private readonly pseudonyms = new Map<string, string>();

  constructor(private readonly keys: AuditKeys) {}

  read(row: AuditRow): void {
    if (row.type === "privacy.erased") {
      if (row.actor !== null) this.erased.add(row.actor);
      return;
    }
    if (row.actor?.startsWith("user:")) this.names(row.actor, row.id);
    if (row.detail === null || !row.detail.includes("user:")) return;
    let detail: unknown;
    try {
      detail = JSON.parse(row.detail);
    } catch {
      return; // the row's own check says what is wrong with it
    }
    if (detail === null || typeof detail !== "object" || Array.isArray(detail)) return;
    for (const [, name] of principalsNamed(detail as Record<string, unknown>)) {
      if (name.startsWith("user:")) this.names(name, row.id);
    }
  }

  private names(account: string, id: number): void {
    if (this.pseudonyms.has(account)) return;
    const pseudonym = this.keys.pseudonym(account);
    this.pseudonyms.set(account, pseudonym);
    this.named.set(pseudonym, id);
  }

  /** The first row naming an account the chain records erased, or null. */
  firstPutBack(): number | null {
    let first: number | null = null;
    for (const pseudonym of this.erased) {
      const id = this.named.get(pseudonym);
      if (id !== undefined && (first === null || id < first)) first = id;
    }
    return first;
  }
}

function walkChain(sqlite: Database, keys: AuditKeys, options: VerifyOptions): VerifyResult {
  const checkpoint = latestCheckpoint(sqlite);
  const fail = (where: string, badId: number | null, reason: string, checked = 0) =>
    ({ ok: false, checked, where, badId, reason }) as const;
  const anchorFails = (where: string, badId: number | null, reason: string, checked: number) =>
    ({ ...fail(where, badId, reason, checked), anchor: true }) as const;
  if (checkpoint) {
    if (checkpoint.keyId !== keys.keyId) {
      return fail(
        `checkpoint ${checkpoint.id}`,
        null,
        "it was not made with this AUDIT_SECRET_KEY, or was altered",
      );
    }
    if (keys.checkpointMac(checkpoint) !== checkpoint.mac) {
      return fail(`checkpoint ${checkpoint.id}`, null, "it was forged or altered");
    }
  }
  let expectedPrev = checkpoint?.lastHash ?? GENESIS_HASH;
  let expectedId = (checkpoint?.lastDeletedId ?? 0) + 1;
  const anchor = options.anchor;
  let anchorHash: string | null = anchor && anchor.count === expectedId - 1 ? expectedPrev : null;
  let checked = 0;
  let lastId: number | null = null;
  const erasures = new ErasuresPutBack(keys);
  for (const row of rowsUpTo(sqlite, options.untilId ?? null)) {
    // Palisade writes ids from 1 up, one at a time: one past what JavaScript counts exactly (or
    // below it) was written into the file, and is named as the file holds it.
    if (!Number.isSafeInteger(row.id)) {
      return fail(
        `row ${storedIdAfter(sqlite, lastId)}`,
        null,
        "its id is past any id Palisade writes: it was written into the database file",
        checked,
      );
    }
    lastId = row.id;
    const fault = rowFault(keys, row, expectedId, expectedPrev);
    if (fault) return fail(`row ${row.id}`, row.id, fault, checked);
    if (anchor && row.id === anchor.count) anchorHash = row.hash;
    erasures.read(row);
    expectedPrev = row.hash;
    expectedId++;
    checked++;
  }
  const putBack = erasures.firstPutBack();
  if (putBack !== null) {
    return fail(
      `row ${putBack}`,
      putBack,
      "it names an account whose erasure the chain records (privacy.erased): it was put back from a copy taken before the erasure, or the erasure is still being written (run again once it has finished: an erasure a stopped process left is finished by the next maintenance run)",
      checked,
    );
  }
  const head = { hash: expectedPrev, count: expectedId - 1 };
  if (anchor) {
    if (anchor.count > head.count) {
      return anchorFails(
        "the head",
        null,
        `the anchor names row ${anchor.count} but the chain ends at row ${head.count}: the newest rows were deleted`,
        checked,
      );
    }
    if (anchorHash === null) {
      return anchorFails(
        "the anchor",
        null,
        `row ${anchor.count} was removed by retention before this check; use a newer anchor`,
        checked,
      );
    }
    if (anchorHash !== anchor.hash) {
      return anchorFails(
        `row ${anchor.count}`,
        anchor.count,
        "its hash differs from the anchor: the chain was rewritten since",
        checked,
      );
    }
  }
  return { ok: true, checked, head };
}
