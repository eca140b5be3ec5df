/**
 * @module
 * Keying a database written before AUDIT_SECRET_KEY existed. Migration 0003 adds the key columns
 * and leaves old rows with `key_id` NULL (they carry the unkeyed SHA-256 chain). Its companion
 * checks that old chain as the old `audit:verify` did, re-hashes those rows (and the old
 * checkpoints) with the key, and the process that applied it records an `audit.chain.keyed` event
 * saying how many rows were keyed and whether their old chain was intact. From then on they are
 * protected like any row; what happened to them before the upgrade is only as certain as the
 * unkeyed chain could make it: anyone able to write the file could have rewritten it, and could
 * put a keyed file back into that shape (the logged head anchors tell).
 */
import type { Database } from "bun:sqlite";
import { asc, count, desc, eq, isNotNull, isNull, sql } from "drizzle-orm";
import { drizzleOf } from "../../db/client";
import { finds } from "../../db/finds";
import { auditCheckpoints, auditEvents } from "../../db/schema";
import type { Logger } from "../../logging/logger";
import { type AuditKeys, GENESIS_HASH, legacyRowHash, subjectCommit } from "./chain";
import type { AuditEvent } from "./events";

export interface LegacyUpgrade {
  keyed: number;
  /** Whether the rows' unkeyed chain verified before they were keyed. */
  intact: boolean;
  firstBrokenId: number | null;
}

/**
 * Whether any audit row or checkpoint lacks a key: on every start after the upgrade the answer is
 * no. Raw SQL, outside a transaction: on the start path, where Drizzle building the upgrade's
 * queries and the IMMEDIATE transaction cost 8-18 ms against 0.2 ms for this (cold process,
 * measured on the shared machine). The upgrade itself re-checks inside its transaction. Without
 * the partial index either form scanned the whole table: ~200 ms at a million rows.
 */
function hasUnkeyedRows(sqlite: Database): boolean {
  return finds(sqlite, UNKEYED_CHECK);
}

/** Reads the partial index `audit_events_unkeyed` (empty once keyed), never the whole table. */
export const UNKEYED_CHECK =
  "SELECT EXISTS (SELECT 1 FROM audit_events WHERE key_id IS NULL) OR EXISTS (SELECT 1 FROM audit_checkpoints WHERE key_id IS NULL) AS found";

/** The migration that adds the key columns; its companion keys the rows stored before it. */
export const KEYED_CHAIN_MIGRATION = "0003_keyed_audit_chain";

/**
 * Keys the pre-upgrade rows and checkpoints, in the transaction of migration 0003 (its companion,
 * upgrade-sealing.ts): whichever process applies it — a start or any CLI command — keys them, so a
 * file past 0003 never holds unkeyed rows of its own. Until this release the first start keyed
 * them, whenever it came: someone with the file but not the key could set every row's `key_id` to
 * NULL (or rewrite the whole log in the unkeyed form) and have the next start take any key and
 * key their rows as genuine (probe 65 F2, F3). Null when there was nothing to key.
 */
export function keyLegacyRows(sqlite: Database, keys: AuditKeys): LegacyUpgrade | null {
  if (!hasUnkeyedRows(sqlite)) return null;
  const db = drizzleOf(sqlite);
  return db.transaction((): LegacyUpgrade | null => {
    const legacy = db
      .select()
      .from(auditEvents)
      .where(isNull(auditEvents.keyId))
      .orderBy(asc(auditEvents.id))
      .all();
    const oldCheckpoints = db
      .select({ n: count() })
      .from(auditCheckpoints)
      .where(isNull(auditCheckpoints.keyId))
      .get()!.n;
    if (legacy.length === 0 && oldCheckpoints === 0) return null;
    // The upgrade happens once, on a database that has never been keyed. Unkeyed rows or
    // checkpoints beside keyed ones cannot come from an upgrade — an attacker without the key
    // can insert an unkeyed checkpoint, and keying it here would bury the rows it claims were
    // pruned — so they are left for verify to report.
    const keyedRows = db
      .select({ n: count() })
      .from(auditEvents)
      .where(isNotNull(auditEvents.keyId))
      .get()!.n;
    const keyedCheckpoints = db
      .select({ n: count() })
      .from(auditCheckpoints)
      .where(isNotNull(auditCheckpoints.keyId))
      .get()!.n;
    if (keyedRows + keyedCheckpoints > 0) return null;
    const checkpoint = db
      .select({
        lastHash: auditCheckpoints.lastHash,
        lastDeletedId: auditCheckpoints.lastDeletedId,
      })
      .from(auditCheckpoints)
      .orderBy(desc(auditCheckpoints.id))
      .limit(1)
      .get();
    // The old chain, checked as the old audit:verify did.
    let oldPrev = checkpoint?.lastHash ?? GENESIS_HASH;
    let firstBrokenId: number | null = null;
    for (const row of legacy) {
      const fine =
        row.prevHash === oldPrev &&
        legacyRowHash(row.prevHash, row) === row.hash &&
        (row.subjectSalt === null ||
          subjectCommit(row.subjectSalt, row.actor, row.ip) === row.subjectCommit);
      if (!fine) {
        firstBrokenId = row.id;
        break;
      }
      oldPrev = row.hash;
    }
    for (const cp of db
      .select()
      .from(auditCheckpoints)
      .where(isNull(auditCheckpoints.keyId))
      .all()) {
      db.update(auditCheckpoints)
        .set({ keyId: keys.keyId, mac: keys.checkpointMac(cp) })
        .where(eq(auditCheckpoints.id, cp.id))
        .run();
    }
    // Re-hash in id order, continuing from the checkpoint; ids of the old rows are kept.
    let prev = checkpoint?.lastHash ?? GENESIS_HASH;
    const value = (name: string) => sql`${sql.placeholder(name)}`;
    const update = db
      .update(auditEvents)
      .set({
        prevHash: value("prevHash"),
        hash: value("hash"),
        keyId: keys.keyId,
        erasureMac: value("erasureMac"),
      })
      .where(eq(auditEvents.id, sql.placeholder("id")))
      .prepare();
    for (const row of legacy) {
      const hash = keys.rowHash(prev, row);
      // Rows erased under the old scheme (salt dropped) get the erasure record they lacked.
      const erasure = row.subjectSalt === null ? keys.erasureMac(row) : null;
      update.run({ prevHash: prev, hash, erasureMac: erasure, id: row.id });
      prev = hash;
    }
    return { keyed: legacy.length, intact: firstBrokenId === null, firstBrokenId };
  });
}

/** What the keying says: one line, at once, by whoever applied the migration. */
export function legacyKeyedMessage(result: LegacyUpgrade): string {
  const chain = result.intact
    ? "their unkeyed chain was intact"
    : `their unkeyed chain was already broken at row ${result.firstBrokenId}`;
  return `keyed ${result.keyed} audit rows written before AUDIT_SECRET_KEY existed (${chain}); if this database was not written by a release from before the keyed audit log, someone rewrote its log in the file: check it against a logged head (audit:verify --head H --count N)`;
}

/** The keying's audit event (`audit.chain.keyed`), a failure when the old chain was broken. */
export function legacyKeyedEvent(result: LegacyUpgrade): AuditEvent {
  return {
    type: "audit.chain.keyed",
    outcome: result.intact ? "success" : "failure",
    actor: "system",
    detail: {
      rows: result.keyed,
      legacyChainIntact: result.intact,
      firstBrokenId: result.firstBrokenId,
    },
  };
}

/**
 * Said at every start that finds rows or checkpoints without a key: past migration 0003 they were
 * written into the file (or turned back into the unkeyed form there), never keyed now; audit:verify
 * names the first.
 */
export function reportUnkeyedRows(sqlite: Database, logger: Logger): void {
  if (!hasUnkeyedRows(sqlite)) return;
  logger.error(
    {},
    "audit rows or checkpoints without a key in a log keyed since migration 0003: written into the file, not keyed (audit:verify names the first)",
  );
}
