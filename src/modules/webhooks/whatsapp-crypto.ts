/**
 * @module
 * The secrets of the WhatsApp webhook, compared without leaking timing:
 *
 * - `X-Hub-Signature-256: sha256=<hex>` is HMAC-SHA256 of the raw body bytes under the Meta app
 *   secret (and, during a rotation, the previous one). Node's `crypto` computes it and
 *   `timingSafeEqual` compares equal-length digests; a header that is not exactly `sha256=` (lower
 *   case, as Meta sends it) and 64 hex digits (either case) fails before any comparison (its
 *   length says nothing about the secret).
 * - The subscription's `hub.verify_token` is compared through SHA-256 digests of both sides, so
 *   the comparison is constant-time whatever the lengths.
 * - A sender's number is named everywhere but the outbox row by an HMAC under a key derived from
 *   AUDIT_SECRET_KEY: stable across restarts and processes, not reversible without the key. So is
 *   every message id stored (Meta's ids hold the number too).
 */

export type SignatureCheck =
  | { valid: true; secret: "current" | "previous" }
  | { valid: false; reason: "missing" | "malformed" | "mismatch" };

// The prefix exactly as Meta sends it (lower case); the digits in either case, as hex is.
const SIGNATURE = /^sha256=([0-9a-fA-F]{64})$/;

export function verifyHubSignature(
  header: string | null,
  body: Uint8Array,
  secrets: { current: string; previous: string | null },
): SignatureCheck {
  if (header === null || header === "") return { valid: false, reason: "missing" };
  const match = SIGNATURE.exec(header.trim());
  if (!match) return { valid: false, reason: "malformed" };
  const given = Buffer.from(match[1]!, "hex");
  const candidates: ["current" | "previous", string][] = [["current", secrets.current]];
  if (secrets.previous) candidates.push(["previous", secrets.previous]);
  // Both are always computed and compared, so the time does not tell which one matched.
  let matched: "current" | "previous" | null = null;
  for (const [name, secret] of candidates) {
    const expected = new Bun.CryptoHasher("sha256", secret).update(body).digest();
    if (crypto.timingSafeEqual(expected, given) && matched === null) matched = name;
  }
  return matched ? { valid: true, secret: matched } : { valid: false, reason: "mismatch" };
}

/** Constant-time equality of two strings of any lengths (through their SHA-256 digests). */
export function sameSecret(given: string, expected: string): boolean {
  const a = new Bun.CryptoHasher("sha256").update(given).digest();
  const b = new Bun.CryptoHasher("sha256").update(expected).digest();
  return crypto.timingSafeEqual(a, b);
}

/** Names a sender's number by a keyed hash (32 hex characters). */
export function senderHasher(auditSecret: string): (number: string) => string {
  const key = new Bun.CryptoHasher("sha256", auditSecret)
    .update("palisade whatsapp sender v1")
    .digest();
  return (number) => new Bun.CryptoHasher("sha256", key).update(number).digest("hex").slice(0, 32);
}

/**
 * Names a WhatsApp message id by a keyed hash (32 hex characters), as it is stored: Meta's ids
 * (`wamid.…`) are base64 that holds the number of the person on the other side, and they are kept
 * 30 days as dedupe keys and to match delivery statuses, which equality of their hashes does as
 * well (probe 86a F2).
 */
export function messageIdKeyer(auditSecret: string): (messageId: string) => string {
  const key = new Bun.CryptoHasher("sha256", auditSecret)
    .update("palisade whatsapp message id v1")
    .digest();
  return (messageId) =>
    new Bun.CryptoHasher("sha256", key).update(messageId).digest("hex").slice(0, 32);
}
