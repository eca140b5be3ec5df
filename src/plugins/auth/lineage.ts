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
