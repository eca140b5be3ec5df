/**
 * @module
 * A refresh token's successor, derived from the token itself under a key from AUDIT_SECRET_KEY.
 *
 * Every rotation stores the successor of the token it consumes. Because the successor is a
 * function of the token, a second presentation of the same token within a few seconds (a client
 * retrying a refresh whose answer it lost, two browser tabs refreshing at once) can be answered
 * with the successor the first presentation stored, without the successor ever being kept
 * anywhere but as its hash. Without the key it cannot be computed from the token (or from anything
 * in the database file), so it is as unguessable as a drawn token: an HMAC-SHA-256 of 256 bits.
 */
import { REFRESH_TOKEN_PREFIX } from "../../plugins/auth/tokens";

/** The label the successor key is derived under: no seal's key is ever the same. */
const LABEL = "palisade refresh successor v1";

export type RefreshSuccessor = (token: string) => string;

/** A token's successor, prefixed as every refresh token issued is (plugins/auth/tokens). */
export function refreshSuccessors(auditSecret: string): RefreshSuccessor {
  const key = new Bun.CryptoHasher("sha256", auditSecret).update(LABEL).digest();
  return (token) =>
    REFRESH_TOKEN_PREFIX + new Bun.CryptoHasher("sha256", key).update(token).digest("base64url");
}

/**
 * The spelling the release before the prefix stored a successor in: the same HMAC, unprefixed. A
 * token that release rotated is looked up under both, so its repeat within the grace, or its
 * reuse after its `used_at` was wiped, is still known across the upgrade.
 */
export function unprefixedSuccessor(successor: string): string {
  return successor.startsWith(REFRESH_TOKEN_PREFIX)
    ? successor.slice(REFRESH_TOKEN_PREFIX.length)
    : successor;
}
