/**
 * @module
 * A key's lineage as its own row says and seals it: the first key of the rotation chain the key
 * ends (its own id when it replaced none; a bootstrap key's, its secret's). Whose payments an
 * ownerless key holds (modules/payments) and what a rotation copies (modules/auth) are both read
 * here, through the credential seal.
 */
import type { Database } from "bun:sqlite";
import type { CredentialSeal } from "./seal";

/** The key's lineage; null when the key is not there or its lineage fails its seal (reported). */
export function keyLineage(
  sqlite: Database,
  seal: Pick<CredentialSeal, "intact">,
  keyId: string,
): string | null {
  const row = sqlite
    .query<{ id: string; lineage: string | null; lineageSeal: string | null }, [string]>(
      "SELECT id, lineage, lineage_seal AS lineageSeal FROM api_keys WHERE id = ?1",
    )
    .get(keyId);
  return row && seal.intact.lineage(row) ? row.lineage : null;
}

interface LineageRow {
  id: string;
  lineage: string | null;
  lineageSeal: string | null;
}

/**
 * Which key replaced which, as the sealed lineages say: a rotation's successor continues its
 * predecessor's lineage and is made after it, and key ids are UUIDv7 (their order is the order they
 * were made in), so a key's successor is the next key of its lineage by id. Bootstrap keys are
 * never rotated (a bootstrap entry added again shares its secret's lineage without replacing
 * anything). A row whose lineage fails its seal continues nothing (reported). Migration 0023 seals
 * each key's rotation mark from this rather than from `replaced_by`, which no seal covered before
 * it; from then on the mark is written and sealed by the rotation itself.
 */
export function keySuccessors(
  sqlite: Database,
  seal: Pick<CredentialSeal, "intact">,
): Map<string, string> {
  const rows = sqlite
    .query<LineageRow, []>(
      `SELECT id, lineage, lineage_seal AS lineageSeal FROM api_keys
       WHERE origin <> 'bootstrap' AND lineage IS NOT NULL ORDER BY id`,
    )
    .all();
  const latest = new Map<string, string>();
  const successors = new Map<string, string>();
  for (const row of rows) {
    if (!seal.intact.lineage(row)) continue;
    const before = latest.get(row.lineage!);
    if (before !== undefined) successors.set(before, row.id);
    latest.set(row.lineage!, row.id);
  }
  return successors;
}
