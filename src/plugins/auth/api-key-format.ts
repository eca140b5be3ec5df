/**
 * @module
 * API key format: `pal_live_` or `pal_test_`, 30 random base62 characters, then a 6-character
 * base62 CRC-32 of everything before it. The checksum lets a typo, or a secret scanner looking at a
 * leaked string, tell a real key without asking the database; it is no secret and proves nothing.
 */

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LENGTH = 30;
const CHECKSUM_LENGTH = 6;
export const KEY_PATTERN = /^pal_(live|test)_[0-9A-Za-z]{36}$/;
/** What identifies a key row without the secret: enough characters to be unique. */
export const PREFIX_LENGTH = 16;
/** Marks a prefix read from the key's hash, which no `pal_` prefix starts with. */
export const HASHED_PREFIX_MARK = "sha256:";

export type KeyEnvironment = "live" | "test";

function toBase62(value: number, width: number): string {
  let out = "";
  let n = value;
  for (let i = 0; i < width; i++) {
    out = BASE62[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

function checksumOf(body: string): string {
  return toBase62(Bun.hash.crc32(body), CHECKSUM_LENGTH);
}

export function generateApiKey(environment: KeyEnvironment): string {
  // Rejection sampling keeps every character uniform: 248 is the largest multiple of 62 under 256.
  let random = "";
  while (random.length < RANDOM_LENGTH) {
    for (const byte of crypto.getRandomValues(new Uint8Array(RANDOM_LENGTH * 2))) {
      if (byte < 248 && random.length < RANDOM_LENGTH) random += BASE62[byte % 62];
    }
  }
  const body = `pal_${environment}_${random}`;
  return `${body}${checksumOf(body)}`;
}

/** A well-formed key with a correct checksum: worth a database lookup. */
export function hasValidChecksum(key: string): boolean {
  if (!KEY_PATTERN.test(key)) return false;
  const body = key.slice(0, -CHECKSUM_LENGTH);
  return checksumOf(body) === key.slice(-CHECKSUM_LENGTH);
}

/**
 * The column a key is found by. A `pal_` key's first 16 characters (its environment and 7 of its
 * 36 random characters); any other key's (an `API_KEYS` entry of the operator's own making, such
 * as `openssl rand -hex 16`) is read from its hash instead, since its first 16 characters would be
 * half of it, in clear, in every backup and every admin's key list (probe 82a F1).
 */
export function keyPrefix(key: string, hash?: string): string {
  return KEY_PATTERN.test(key)
    ? key.slice(0, PREFIX_LENGTH)
    : hashedPrefix(hash ?? hashApiKey(key));
}

/** A key's lookup prefix read from its SHA-256 (hex): what a key of no `pal_` shape is found by. */
export function hashedPrefix(hash: string): string {
  return `${HASHED_PREFIX_MARK}${hash.slice(0, PREFIX_LENGTH - HASHED_PREFIX_MARK.length)}`;
}

export function hashApiKey(key: string): string {
  return Bun.SHA256.hash(key, "hex");
}
