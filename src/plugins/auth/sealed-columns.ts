/**
 * @module
 * The columns each credential's seal covers, with the seal: what every read that checks a seal
 * selects, so a check never works from fewer columns than the seal was made from.
 */
import { apiKeys, refreshFamilies, users } from "../../db/schema";

export const sealedAccountColumns = {
  id: users.id,
  email: users.email,
  emailKey: users.emailKey,
  passwordHash: users.passwordHash,
  role: users.role,
  seal: users.seal,
};

export const sealedKeyColumns = {
  id: apiKeys.id,
  prefix: apiKeys.prefix,
  secretHash: apiKeys.secretHash,
  scopes: apiKeys.scopes,
  userId: apiKeys.userId,
  expiresAt: apiKeys.expiresAt,
  revokedAt: apiKeys.revokedAt,
  origin: apiKeys.origin,
  seal: apiKeys.seal,
};

export const sealedFamilyColumns = {
  id: refreshFamilies.id,
  userId: refreshFamilies.userId,
  revokedAt: refreshFamilies.revokedAt,
  seal: refreshFamilies.seal,
};
