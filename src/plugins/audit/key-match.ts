/**
 * @module
 * An audit log is written with one AUDIT_SECRET_KEY for its whole life. A process given another one
 * — a CLI command run from a shell without the service's AUDIT_SECRET_KEY (in development it then
 * generates `DATABASE_PATH.audit-key` and uses that), or a service restarted with a new key — would
 * append rows the chain can never verify past, and refuse every stored credential as tampered. So
 * a process whose key is not the one the newest keyed row was written with stops before it writes
 * anything, with one line naming the variable.
 */
import type { Database } from "bun:sqlite";
import { ConfigError } from "../../config";
import { spellOut } from "../../logging/spell-out";

export function assertAuditKeyMatches(sqlite: Database, keyId: string): void {
  const newest = sqlite
    .query<{ id: number; keyId: unknown }, []>(
      "SELECT id, key_id AS keyId FROM audit_events WHERE key_id IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .get();
  if (newest === null || newest.keyId === keyId) return;
  throw new ConfigError(
    "AUDIT_SECRET_KEY",
    `is not the key this database's audit log is written with (its newest row, id ${newest.id}, has key id ${spellOut(String(newest.keyId), 32)}; this key's id is ${keyId}): give this process the service's AUDIT_SECRET_KEY (if it has it, that row was written into the file by someone else: audit:verify names it)`,
  );
}
