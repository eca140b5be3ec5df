/**
 * @module
 * Keying a database written before AUDIT_SECRET_KEY existed. Migration 0003 adds the key columns
 * and leaves old rows with `key_id` NULL (they carry the unkeyed SHA-256 chain). The first start
 * with a key checks that old chain as the old `audit:verify` did, re-hashes those rows (and the
 * old checkpoints) with the key, and records an `audit.chain.keyed` event saying how many rows were
 * keyed and whether their old chain was intact. From then on they are protected like any row; what
 * happened to them before the upgrade is only as certain as the unkeyed chain could make it (anyone
 * able to write the file could have rewritten it). Until that first start, `audit:verify` reports
 * the unkeyed rows as a failure.
 */
import type { Database } from "bun:sqlite";
import type { Logger } from "pino";
import { type AuditKeys, GENESIS_HASH, legacyRowHash, subjectCommit } from "./chain";
import type { AuditLog } from "./log";
import { AUDIT_COLUMNS, type AuditRow } from "./verify";

export interface LegacyUpgrade {
  keyed: number;
  /** Whether the rows' unkeyed chain verified before they were keyed. */
  intact: boolean;
  firstBrokenId: number | null;
}

/** Keys the pre-upgrade rows and checkpoints; null when there was nothing to do. */
export function keyLegacyAuditRows(
  sqlite: Database,
  keys: AuditKeys,
  audit: AuditLog,
  logger: Logger,
): LegacyUpgrade | null {
  const result = sqlite
    .transaction((): LegacyUpgrade | null => {
      const legacy = sqlite
        .query<AuditRow, []>(
          `SELECT ${AUDIT_COLUMNS} FROM audit_events WHERE key_id IS NULL ORDER BY id`,
        )
        .all();
      const oldCheckpoints = sqlite
        .query<{ n: number }, []>(
          "SELECT count(*) AS n FROM audit_checkpoints WHERE key_id IS NULL",
        )
        .get()!.n;
      if (legacy.length === 0 && oldCheckpoints === 0) return null;
      // The upgrade happens once, on a database that has never been keyed. Unkeyed rows or
      // checkpoints beside keyed ones cannot come from an upgrade — an attacker without the key
      // can insert an unkeyed checkpoint, and keying it here would bury the rows it claims were
      // pruned — so they are left for verify to report.
      const keyedExists = sqlite
        .query<{ n: number }, []>(
          `SELECT (SELECT count(*) FROM audit_events WHERE key_id IS NOT NULL) +
                  (SELECT count(*) FROM audit_checkpoints WHERE key_id IS NOT NULL) AS n`,
        )
        .get()!.n;
      if (keyedExists > 0) {
        logger.error(
          { rows: legacy.length, checkpoints: oldCheckpoints },
          "unkeyed audit rows or checkpoints beside keyed ones; not keying them (audit:verify reports them)",
        );
        return null;
      }
      const checkpoint = sqlite
        .query<{ lastHash: string; lastDeletedId: number }, []>(
          `SELECT last_hash AS lastHash, last_deleted_id AS lastDeletedId
           FROM audit_checkpoints ORDER BY id DESC LIMIT 1`,
        )
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
      for (const cp of sqlite
        .query<
          {
            id: number;
            createdAt: number;
            lastDeletedId: number;
            lastHash: string;
            deletedCount: number;
          },
          []
        >(
          `SELECT id, created_at AS createdAt, last_deleted_id AS lastDeletedId,
                  last_hash AS lastHash, deleted_count AS deletedCount
           FROM audit_checkpoints WHERE key_id IS NULL`,
        )
        .all()) {
        sqlite.run("UPDATE audit_checkpoints SET key_id = ?, mac = ? WHERE id = ?", [
          keys.keyId,
          keys.checkpointMac(cp),
          cp.id,
        ]);
      }
      // Re-hash in id order, continuing from the checkpoint; ids of the old rows are kept.
      let prev = checkpoint?.lastHash ?? GENESIS_HASH;
      const update = sqlite.prepare(
        "UPDATE audit_events SET prev_hash = ?, hash = ?, key_id = ?, erasure_mac = ? WHERE id = ?",
      );
      for (const row of legacy) {
        const hash = keys.rowHash(prev, row);
        // Rows erased under the old scheme (salt dropped) get the erasure record they lacked.
        const erasure =
          row.subjectSalt === null
            ? keys.erasureMac(row.id, row.subjectCommit, row.actor, row.ip)
            : null;
        update.run(prev, hash, keys.keyId, erasure, row.id);
        prev = hash;
      }
      return { keyed: legacy.length, intact: firstBrokenId === null, firstBrokenId };
    })
    .immediate();
  if (result) {
    const log = result.intact ? logger.warn.bind(logger) : logger.error.bind(logger);
    log(result, "audit rows written before AUDIT_SECRET_KEY existed were keyed");
    audit.record({
      type: "audit.chain.keyed",
      outcome: result.intact ? "success" : "failure",
      actor: "system",
      detail: {
        rows: result.keyed,
        legacyChainIntact: result.intact,
        firstBrokenId: result.firstBrokenId,
      },
    });
    audit.flush();
  }
  return result;
}
