/**
 * @module
 * Block seals: what keeps someone who can write the database file, but does not hold
 * AUDIT_SECRET_KEY, from blocking an address or locking a living user out. Every process enforces
 * every block row it reads, and the rows carried nothing Palisade alone could make: an insert into
 * `ip_blocks` (a lockout of `user:<id>` for a year, a block of the office's address) was obeyed by
 * every process within a second, with no `ip.blocked` or `auth.locked_out` event and a chain that
 * still verified.
 *
 * So every `ip_blocks` row carries a `seal`, an HMAC (db/row-seal.ts, its own key label) over all
 * its columns: the id (a sealed row copied under new ids would count as earlier offences and
 * lengthen the next automatic block), the subject, reason, source, who made it, when, until when,
 * and when it was lifted. Palisade seals each row it writes and reseals each change it makes (a
 * lift, an erasure naming the pseudonym). A row that does not match blocks nothing, counts towards
 * no escalation, and is left out of `GET /api/admin/blocks`, `blocks:list` and exports; it is
 * reported once per process: an error line and an `ip.block_tampered` audit event naming the row
 * (alert `PalisadeDatabaseTampered`). It stays in the file for whoever investigates, until the
 * prune deletes it with the other ended blocks.
 *
 * Not covered: deleting a row or setting its `lifted_at` lifts a block (the `ip.blocked` event
 * stays in the audit log), and a copy of an older row of the same file, seal and all (a rollback:
 * a lifted block put back in force until its end).
 */
import { elapsedMs } from "../../clock";
import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import { createRowSealer, sealMatches } from "../../db/row-seal";
import type { AuditEvent } from "../audit/events";

/** The columns a block's seal covers: all of them. */
export interface SealedBlock {
  id: number;
  address: string;
  reason: string;
  source: string;
  createdBy: string | null;
  createdAt: number;
  expiresAt: number;
  liftedAt: number | null;
}

export interface BlockSeal {
  /** The seal of a row with these columns. */
  of(row: SealedBlock): string;
  /** Whether a stored row matches its seal; a row without one never does. */
  intact(row: SealedBlock & { seal: string | null }): boolean;
}

const KEY_LABEL = "palisade ip block seal v1";

/** What a block's seal covers, in its order: every column but the seal itself. */
export function sealedFields(row: SealedBlock): unknown[] {
  return [
    "ip_block",
    row.id,
    row.address,
    row.reason,
    row.source,
    row.createdBy,
    row.createdAt,
    row.expiresAt,
    row.liftedAt,
  ];
}

/** The seal keyed from `auditSecret`. */
export function createBlockSeal(auditSecret: string): BlockSeal {
  const mac = createRowSealer(auditSecret, KEY_LABEL);
  const of = (row: SealedBlock) => mac(sealedFields(row));
  return { of, intact: (row) => sealMatches(of(row), row.seal) };
}

/**
 * The sealed columns of `ip_blocks` in SQL, named as SealedBlock names them, the seal, and the id
 * also as text (`idText`): past 2^53 the number is read rounded, and a report naming it would
 * name a row that does not exist (probe 53a F2's class).
 */
export const SEALED_BLOCK_COLUMNS = `id, address, reason, source, created_by AS createdBy,
  created_at AS createdAt, expires_at AS expiresAt, lifted_at AS liftedAt, seal,
  CAST(id AS TEXT) AS idText`;

/** Rows reported one by one, per process; past them, how many more were read, once a minute. */
export const ROWS_REPORTED_ONE_BY_ONE = 100;
/** Rows remembered as reported (ids only); past it new ones are counted, never remembered. */
const ROWS_REMEMBERED = 100_000;
const SUMMARY_EVERY_MS = 60_000;

export interface BlockTamperReporter {
  /** Reports the rows (by id, as the file holds it) just read that do not match their seals. */
  report(ids: readonly string[]): void;
}

/**
 * Reports block rows that do not match their seals: each of the first 100 rows of a process once,
 * as an error line and an `ip.block_tampered` audit event naming the row's id (never its subject,
 * whatever the file's writer put there); past them, at most once a minute, one line and one event
 * saying how many more were read. Every address's requests and the gauge's sweep read the table,
 * so a file with thousands of forged rows must not become thousands of lines and must-not-lose
 * audit writes.
 */
export function blockTamperReporter(deps: {
  logger: { error(fields: Record<string, unknown>, message: string): void };
  audit: { record(event: AuditEvent): void };
  clock: { now(): number };
}): BlockTamperReporter {
  const reported = new Set<string>();
  let more = 0;
  let summarizedAt = Number.NEGATIVE_INFINITY;
  const table = "ip_blocks";
  return {
    report(ids) {
      for (const id of ids) {
        if (reported.has(id)) continue;
        if (reported.size < ROWS_REMEMBERED) reported.add(id);
        if (reported.size > ROWS_REPORTED_ONE_BY_ONE || !reported.has(id)) {
          more++;
          continue;
        }
        // A number in the log as before, unless only the text is exact.
        const exact = Number(id);
        deps.logger.error(
          { table, id: Number.isSafeInteger(exact) ? exact : id },
          "a block row does not match its seal: it was written into the database file, not by Palisade; it blocks nothing",
        );
        deps.audit.record({
          type: "ip.block_tampered",
          outcome: "denied",
          actor: "system",
          detail: { table, id },
        });
      }
      const now = deps.clock.now();
      if (more === 0 || elapsedMs(now, summarizedAt) < SUMMARY_EVERY_MS) return;
      deps.logger.error(
        { table, more },
        "more block rows do not match their seals (each of the first 100 was reported; these are counted since the last report): they block nothing",
      );
      deps.audit.record({
        type: "ip.block_tampered",
        outcome: "denied",
        actor: "system",
        detail: { table, more },
      });
      more = 0;
      summarizedAt = now;
    },
  };
}

export const BLOCK_SEALS_MIGRATION = "0021_ip_block_seals";

/**
 * The companion that seals every block row when migration 0021 is applied, in its transaction
 * (db/migrate.ts), as the credentials are with 0013: only the call that applies it seals, so a row
 * written into the file afterwards blocks nothing. What the file held before the upgrade is sealed
 * as it was (said and audited, `ip.blocks_sealed`; a second sealing of the same file is
 * `db.resealed`).
 */
export function blockSealing(seal: BlockSeal): {
  companions: MigrationCompanions;
  sealed(): { blocks: number } | null;
} {
  let sealed: { blocks: number } | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const rows = sqlite
      .query<SealedBlock, []>(`SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks`)
      .all();
    const update = sqlite.prepare("UPDATE ip_blocks SET seal = ? WHERE id = ?");
    for (const row of rows) update.run(seal.of(row), row.id);
    sealed = { blocks: rows.length };
  };
  return { companions: new Map([[BLOCK_SEALS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/** What the start and the CLI say when the upgrade sealed blocks. */
export function blocksSealedMessage({ blocks }: { blocks: number }): string {
  return `sealed the ${blocks} address blocks and lockouts stored before this release; block rows written into the file from now on block nothing`;
}
