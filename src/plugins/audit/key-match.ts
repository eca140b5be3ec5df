/**
 * @module
 * An audit log is written with one AUDIT_SECRET_KEY for its whole life. A process given another one
 * — a CLI command run from a shell without the service's AUDIT_SECRET_KEY (in development it then
 * generates `DATABASE_PATH.audit-key` and uses that), or a service restarted with a new key — would
 * append rows the chain can never verify past, and refuse every stored credential as tampered. So
 * a process whose key has written no row of a log that holds keyed rows stops before it writes
 * anything, with one line naming the variable. Each row records its key's id (not a secret): the
 * newest row is looked at first; only when it is another key's is the log searched for this one,
 * so a row someone wrote into the file with another id (which `audit:verify` names) cannot stop a
 * service that has the right key.
 */
import type { Database } from "bun:sqlite";
import { ConfigError } from "../../config";
import { spellOut } from "../../logging/spell-out";
import type { AuditLog } from "./log";

export function assertAuditKeyMatches(sqlite: Database, keyId: string): void {
  const newest = sqlite
    .query<{ id: number; keyId: unknown }, []>(
      "SELECT id, key_id AS keyId FROM audit_events WHERE key_id IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .get();
  if (newest === null || newest.keyId === keyId) return;
  const written = sqlite
    .query<{ one: number }, [string]>("SELECT 1 AS one FROM audit_events WHERE key_id = ? LIMIT 1")
    .get(keyId);
  if (written !== null) return;
  throw new ConfigError(
    "AUDIT_SECRET_KEY",
    `is not the key this database's audit log is written with (no row has this key's id, ${keyId}; the newest, id ${newest.id}, has ${spellOut(String(newest.keyId), 32)}): give this process the service's AUDIT_SECRET_KEY (if it has that key, the rows' key ids were changed in the file: audit:verify names the first)`,
  );
}

/**
 * The same check before a start or a command migrates the file: a migration's companion seals rows
 * with the key it is given, so a process with another key that migrated first, then was refused,
 * had sealed them with that key for good (probe 63a F3: a payment's undecided refunds resealed
 * with no match, the payment refusing every refund). A file older than the keyed log (no key
 * column yet) has no key to hold it to.
 */
export function assertAuditKeyMatchesBeforeMigrating(sqlite: Database, keyId: string): void {
  const keyed = sqlite
    .query<{ found: number }, []>(
      "SELECT EXISTS (SELECT 1 FROM pragma_table_info('audit_events') WHERE name = 'key_id') AS found",
    )
    .get();
  if (keyed?.found === 1) assertAuditKeyMatches(sqlite, keyId);
}

/**
 * Whether the log holds a row or a checkpoint written with a key: false for a new log, and for one
 * whose rows the first start with a key has yet to key (plugins/audit/upgrade.ts).
 */
export function holdsKeyedRows(sqlite: Database): boolean {
  return (
    sqlite
      .query<{ found: number }, []>(
        "SELECT EXISTS (SELECT 1 FROM audit_events WHERE key_id IS NOT NULL) OR EXISTS (SELECT 1 FROM audit_checkpoints WHERE key_id IS NOT NULL) AS found",
      )
      .get()?.found === 1
  );
}

/**
 * Writes the first row of a new audit log at a start: its key's id is then on record before any
 * CLI command writes, so a command run from a shell without the service's AUDIT_SECRET_KEY (which
 * in development makes a key file of its own) is refused on a new database too, not taken as the
 * log's key because it wrote first. `audit.chain.keyed` with no rows keyed: the chain starts here,
 * keyed with this key.
 */
export function pinAuditKey(sqlite: Database, audit: AuditLog): void {
  const empty = sqlite
    .query<{ empty: number }, []>(
      "SELECT NOT EXISTS (SELECT 1 FROM audit_events) AND NOT EXISTS (SELECT 1 FROM audit_checkpoints) AS empty",
    )
    .get();
  if (empty?.empty !== 1) return;
  audit.record({
    type: "audit.chain.keyed",
    outcome: "success",
    actor: "system",
    detail: { rows: 0 },
  });
  audit.flush();
}
