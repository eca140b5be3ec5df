/**
 * @module
 * A key's lineage as its own row says and seals it: the first key of the rotation chain the key
 * ends (its own id when it replaced none; a bootstrap key's, its secret's). Whose payments an
 * ownerless key holds (modules/payments) and what a rotation copies (modules/auth) are both read
 * here, through the credential seal.
 */
import type { Database } from "bun:sqlite";
import type { CredentialSeal, SealedApiKey } from "./seal";

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

type ChainRow = SealedApiKey & LineageRow & { seal: string | null };

/**
 * Which key replaced which, as the sealed lineages say: a rotation's successor continues its
 * predecessor's lineage and is made after it, and key ids are UUIDv7 (their order is the order they
 * were made in), so a key's successor is the next key of its lineage by id. Bootstrap keys are
 * never rotated (a bootstrap entry added again shares its secret's lineage without replacing
 * anything). A row whose lineage fails its seal continues nothing (reported). Migration 0023 seals
 * each key's rotation mark from this where it shows a successor (`replaced_by`, which no seal
 * covered before it, only where it does not); from then on the rotation writes and seals the mark.
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

/**
 * The other keys of `keyId`'s rotation chain that act for the same owner (`userId`; null for a key
 * acting for no user): every key whose row and lineage are sealed, whose lineage is `keyId`'s, and
 * whose owner is the same. A key an admin rotated for themselves is another owner's, and a row
 * deleted from the file links nothing. Empty when `keyId`'s lineage fails its seal (reported) or
 * it is not there. What a chain holds in common beyond payments (a key's chat conversations) is
 * read through this.
 */
export function keyChain(
  sqlite: Database,
  seal: Pick<CredentialSeal, "intact">,
  keyId: string,
  userId: string | null,
): string[] {
  const lineage = keyLineage(sqlite, seal, keyId);
  if (lineage === null) return [];
  // Raw and cached by bun:sqlite: a query built by Drizzle on each chat request cost a turn more
  // than its whole defence chain (~100 µs; bench, POST /api/chat with an API key).
  return sqlite
    .query<ChainRow, [string, string]>(
      `SELECT id, prefix, secret_hash AS secretHash, scopes, user_id AS userId,
              expires_at AS expiresAt, revoked_at AS revokedAt, origin, seal,
              lineage, lineage_seal AS lineageSeal
       FROM api_keys WHERE lineage = ?1 AND id <> ?2`,
    )
    .all(lineage, keyId)
    .filter((row) => row.userId === userId && seal.intact.apiKey(row) && seal.intact.lineage(row))
    .map((row) => row.id);
}
