/**
 * @module
 * Sealing the credentials a database held before seals existed. Migration 0013 adds the `seal`
 * columns and leaves every row without one; the start (or `db:migrate`) that applied it seals
 * those rows at once, in one immediate transaction, before anything is served. Only that call
 * does: a row without a seal found by any later start is refused, so rows written into the file
 * after the upgrade are never sealed by Palisade.
 *
 * What the rows said before the upgrade is only as certain as the file was; the count is logged
 * (and audited by the start), so a second sealing of a file that was put back into its pre-0013
 * shape shows up as a second such line.
 */
import { isNull } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import type { MigrationStatus } from "../../db/migrate";
import { apiKeys, refreshTokens, users } from "../../db/schema";
import type { CredentialSeal } from "../../plugins/auth/seal";

export const SEALS_MIGRATION = "0013_credential_seals";

export interface SealedOnUpgrade {
  users: number;
  apiKeys: number;
  refreshTokens: number;
}

/**
 * Seals every unsealed row when `status` says this call added the columns. Null when it did not,
 * or when there was nothing to seal (a new database).
 */
export function sealCredentialsOnUpgrade(
  db: AppDatabase,
  status: MigrationStatus,
  seal: CredentialSeal,
): SealedOnUpgrade | null {
  if (!status.appliedNow.includes(SEALS_MIGRATION)) return null;
  return db.transaction(
    (tx) => {
      const sealed: SealedOnUpgrade = { users: 0, apiKeys: 0, refreshTokens: 0 };
      const accounts = tx
        .select({ id: users.id, passwordHash: users.passwordHash, role: users.role })
        .from(users)
        .where(isNull(users.seal))
        .all();
      const setUserSeal = db.$client.prepare("UPDATE users SET seal = ? WHERE id = ?");
      for (const row of accounts) setUserSeal.run(seal.account(row), row.id);
      sealed.users = accounts.length;

      const keys = tx
        .select({
          id: apiKeys.id,
          prefix: apiKeys.prefix,
          secretHash: apiKeys.secretHash,
          scopes: apiKeys.scopes,
          userId: apiKeys.userId,
          expiresAt: apiKeys.expiresAt,
          revokedAt: apiKeys.revokedAt,
          origin: apiKeys.origin,
        })
        .from(apiKeys)
        .where(isNull(apiKeys.seal))
        .all();
      const setKeySeal = db.$client.prepare("UPDATE api_keys SET seal = ? WHERE id = ?");
      for (const row of keys) setKeySeal.run(seal.apiKey(row), row.id);
      sealed.apiKeys = keys.length;

      const tokens = tx
        .select({
          id: refreshTokens.id,
          userId: refreshTokens.userId,
          familyId: refreshTokens.familyId,
          tokenHash: refreshTokens.tokenHash,
          expiresAt: refreshTokens.expiresAt,
        })
        .from(refreshTokens)
        .where(isNull(refreshTokens.seal))
        .all();
      const setTokenSeal = db.$client.prepare("UPDATE refresh_tokens SET seal = ? WHERE id = ?");
      for (const row of tokens) setTokenSeal.run(seal.refreshToken(row), row.id);
      sealed.refreshTokens = tokens.length;
      return sealed.users + sealed.apiKeys + sealed.refreshTokens > 0 ? sealed : null;
    },
    { behavior: "immediate" },
  );
}
