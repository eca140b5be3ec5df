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
  const email = `${userId}@bench.invalid`;
  // Sealed as Palisade seals it: the chat route keeps turns only for an account that is there.
  const account = { id: userId, email, emailKey: email, passwordHash: "unused", role: "user" };
  sqlite.run(
    `INSERT OR IGNORE INTO users (id, email, email_key, password_hash, role, created_at, updated_at, seal)
     VALUES (?, ?, ?, 'unused', 'user', ?, ?, ?)`,
    [userId, email, email, now, now, seal.account(account)],
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
