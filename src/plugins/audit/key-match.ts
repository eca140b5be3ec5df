/**
 * @module
 * An audit log is written with one AUDIT_SECRET_KEY for its whole life. A process given another one
 * — a CLI command run from a shell without the service's AUDIT_SECRET_KEY (in development it then
 * generates `DATABASE_PATH.audit-key` and uses that), or a service restarted with a new key — would
 * append rows the chain can never verify past, and refuse every stored credential as tampered. So
 * a process whose key made none of the newest rows (or, once retention emptied the log, its
 * checkpoints) of a log that holds keyed ones stops before it writes anything, with one line naming
 * the variable. Each row records its key's id (not a secret), which says where to look, never
 * whether a key is the log's: that is the row's hash or the checkpoint's MAC. So a row someone
 * wrote into the file with another id (which `audit:verify` names) cannot stop a service that has
 * the right key, nor one with this key's id let another key in.
 */
import type { Database } from "bun:sqlite";
import { ConfigError } from "../../config";
import { finds } from "../../db/finds";
import { sealMatches } from "../../db/row-seal";
import { spellOut } from "../../logging/spell-out";
import type { AuditKeys, ChainedFields, CheckpointFields } from "./chain";
import type { AuditEvent } from "./events";

export function assertAuditKeyMatches(sqlite: Database, keys: AuditKeys): void {
  const { keyId } = keys;
  // A log whose rows were all deleted but its checkpoints still names its key by them (probe 64
  // F4: reduced to keyed checkpoints, it took any key).
  const newest =
    sqlite
      .query<{ what: string; id: number; keyId: unknown }, []>(
        "SELECT 'row' AS what, id, key_id AS keyId FROM audit_events WHERE key_id IS NOT NULL ORDER BY id DESC LIMIT 1",
      )
      .get() ??
    sqlite
      .query<{ what: string; id: number; keyId: unknown }, []>(
        "SELECT 'checkpoint' AS what, id, key_id AS keyId FROM audit_checkpoints WHERE key_id IS NOT NULL ORDER BY id DESC LIMIT 1",
      )
      .get();
  if (newest === null) {
    // No keyed row or checkpoint. A new log takes its first key; a log from before the keyed chain
    // is keyed by migration 0003's companion, in the transaction that adds the key columns, so
    // rows without a key in a file past it were written into the file (or had their key ids
    // removed there: probe 65 F3, after which any key was taken, migrated and keyed the log for
    // good). Such a log takes only the key one of its newest rows or checkpoints is made with.
    if (!holdsAuditRows(sqlite) || vouchedByKey(sqlite, keys, null)) return;
    throw new ConfigError(
      "AUDIT_SECRET_KEY",
      `cannot be checked against this database's audit log: it holds rows but none with a key id, and none of its newest is made with this key (whose id is ${keyId}): the log was rewritten in the file (its key ids removed, or put into the form from before keyed logs); restore it from a backup`,
    );
  }
  // A key id names a key but proves nothing: it is no secret (a refusal prints it), and anyone
  // with the file can write a row carrying it (probe 65 F4: one such row let another key migrate
  // and seal). A key is the log's when a row or checkpoint is shown to be made with it: the
  // newest carrying its id, else the newest of all, whatever their ids say (the ids were rewritten
  // in the file, which audit:verify reports; refusing the right key there also refused
  // audit:verify itself whenever a migration was pending: probe 64 F5).
  if (vouchedByKey(sqlite, keys, keyId) || vouchedByKey(sqlite, keys, null)) return;
  throw new ConfigError(
    "AUDIT_SECRET_KEY",
    `is not the key this database's audit log is written with (none of its newest rows or checkpoints is made with this key, whose id is ${keyId}; the newest ${newest.what}, id ${newest.id}, names ${spellOut(newest.keyId, 32)}): give this process the service's AUDIT_SECRET_KEY (if it has that key, the log's newest rows were changed in the file: restore it from a backup)`,
  );
}

/** How many of the newest rows, and of the newest checkpoints, a key is tried against. */
const VOUCHING_ROWS = 8;

/** Whether the log holds any row or checkpoint, keyed or not. */
export function holdsAuditRows(sqlite: Database): boolean {
  return finds(
    sqlite,
    "SELECT EXISTS (SELECT 1 FROM audit_events) OR EXISTS (SELECT 1 FROM audit_checkpoints) AS found",
  );
}

/**
 * Whether one of the log's newest rows or checkpoints carrying `keyId` (whatever key id, or none,
 * when null) was made with `keys`: its hash or MAC, compared in constant time.
 */
function vouchedByKey(sqlite: Database, keys: AuditKeys, keyId: string | null): boolean {
  const carrying = keyId === null ? "1" : "key_id = ?1";
  const bound = keyId === null ? [] : [keyId];
  const rows = sqlite
    .query<ChainedFields & { prevHash: unknown; hash: unknown }, string[]>(
      `SELECT id, at, type, route, request_id AS requestId, outcome, detail,
              subject_commit AS subjectCommit, prev_hash AS prevHash, hash
       FROM audit_events WHERE ${carrying} ORDER BY id DESC LIMIT ${VOUCHING_ROWS}`,
    )
    .all(...bound);
  if (
    rows.some(
      (row) =>
        typeof row.prevHash === "string" &&
        sealMatches(keys.rowHash(row.prevHash, row), row.hash as string | null),
    )
  ) {
    return true;
  }
  const checkpoints = sqlite
    .query<CheckpointFields & { mac: unknown }, string[]>(
      `SELECT created_at AS createdAt, last_deleted_id AS lastDeletedId, last_hash AS lastHash,
              deleted_count AS deletedCount, mac
       FROM audit_checkpoints WHERE ${carrying} ORDER BY id DESC LIMIT ${VOUCHING_ROWS}`,
    )
    .all(...bound);
  return checkpoints.some((checkpoint) =>
    sealMatches(keys.checkpointMac(checkpoint), checkpoint.mac as string | null),
  );
}

/**
 * The same check before a start or a command migrates the file: a migration's companion seals rows
 * with the key it is given, so a process with another key that migrated first, then was refused,
 * had sealed them with that key for good (probe 63a F3: a payment's undecided refunds resealed
 * with no match, the payment refusing every refund). A file older than the keyed log (no key
 * column yet) has no key to hold it to.
 */
export function assertAuditKeyMatchesBeforeMigrating(sqlite: Database, keys: AuditKeys): void {
  if (hasAuditKeyColumn(sqlite)) assertAuditKeyMatches(sqlite, keys);
}

/** Whether the file's audit log has its key columns (migration 0003) yet. */
export function hasAuditKeyColumn(sqlite: Database): boolean {
  return finds(
    sqlite,
    "SELECT EXISTS (SELECT 1 FROM pragma_table_info('audit_events') WHERE name = 'key_id') AS found",
  );
}

/**
 * Whether the log holds a row or a checkpoint written with a key: false for a new log (and for one
 * whose key ids were removed in the file).
 */
export function holdsKeyedRows(sqlite: Database): boolean {
  return finds(
    sqlite,
    "SELECT EXISTS (SELECT 1 FROM audit_events WHERE key_id IS NOT NULL) OR EXISTS (SELECT 1 FROM audit_checkpoints WHERE key_id IS NOT NULL) AS found",
  );
}

/**
 * The first row of a new audit log, written by a start: its key's id is then on record before any
 * CLI command writes, so a command run from a shell without the service's AUDIT_SECRET_KEY (which
 * in development makes a key file of its own) is refused on a new database too, not taken as the
 * log's key because it wrote first. `audit.chain.keyed` with no rows keyed: the chain starts here,
 * keyed with this key. A start writes it in its migrations' transaction, before what they sealed
 * (upgrade-sealing's `recordInMigration`), or, on a file migrated without it, before its services
 * write anything (`pinNewAuditLog`).
 */
export const NEW_LOG_KEYED: AuditEvent = {
  type: "audit.chain.keyed",
  outcome: "success",
  actor: "system",
  detail: { rows: 0 },
};
