/**
 * @module
 * A user and a live refresh family for the bench's hand-signed access token: the verifier accepts
 * a token only for a family the database knows, sealed as Palisade seals it.
 */
import type { Database } from "bun:sqlite";
import type { CredentialSeal } from "../src/plugins/auth/seal";

export function benchFamily(
  sqlite: Database,
  seal: CredentialSeal,
  userId: string,
  familyId: string,
): void {
  const now = Date.now();
  sqlite.run(
    `INSERT OR IGNORE INTO users (id, email, password_hash, role, created_at, updated_at)
     VALUES (?, ?, 'unused', 'user', ?, ?)`,
    [userId, `${userId}@bench.invalid`, now, now],
  );
  sqlite.run(
    `INSERT OR IGNORE INTO refresh_families (id, user_id, created_at, expires_at, seal)
     VALUES (?, ?, ?, ?, ?)`,
    [
      familyId,
      userId,
      now,
      now + 24 * 60 * 60_000,
      seal.family({ id: familyId, userId, revokedAt: null }),
    ],
  );
}
