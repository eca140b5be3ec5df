/**
 * @module
 * Row seals: an HMAC, keyed from AUDIT_SECRET_KEY, over the columns of a row that decide what
 * Palisade does with it. Someone who can write the database file but does not hold the key cannot
 * make a row Palisade trusts: a row whose seal does not match its columns is one it did not write.
 * Each kind of row derives its own key from a label, so a seal made for one kind never matches
 * another. (The credential seals, plugins/auth/seal.ts; the WhatsApp outbox, modules/webhooks.)
 */
import { createHmac, timingSafeEqual } from "node:crypto";

/** The seal of a row's fields under the key derived from `auditSecret` for `label`. */
export function createRowSealer(
  auditSecret: string,
  label: string,
): (fields: readonly unknown[]) => string {
  const key = createHmac("sha256", auditSecret).update(label).digest();
  // A JSON array keeps the fields apart whatever they contain (no separator to smuggle in). Bun's
  // own HMAC: half the cost of node:crypto's per seal (1.5 against 2.9 µs, measured in process).
  return (fields) =>
    new Bun.CryptoHasher("sha256", key).update(JSON.stringify(fields)).digest("base64url");
}

/** Whether `stored` is the seal `expected`, in constant time; a missing seal never is. */
export function sealMatches(expected: string, stored: string | null | undefined): boolean {
  if (typeof stored !== "string") return false;
  // Compared as bytes: a stored seal of as many characters but more bytes (any non-ASCII text)
  // must be a mismatch, not a RangeError from timingSafeEqual.
  const given = Buffer.from(stored);
  const wanted = Buffer.from(expected);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}
