/**
 * @module
 * Signed double-submit CSRF tokens: `<issuedAt>.<nonce>.<signature>`, where the signature is
 * HMAC-SHA256 over the time, the nonce and a hash of the session cookie. The same token goes in a
 * cookie and, from the page's script, in the X-CSRF-Token header. A cross-site attacker can make
 * the browser send the cookie but can neither read it nor forge a token bound to the victim's
 * session; the signature also stops a token planted by a sibling subdomain.
 */

export const CSRF_TOKEN_LIFETIME_MS = 60 * 60 * 1000;
/** Tokens stamped a little in the future (another process's clock) are still accepted. */
const CLOCK_SKEW_MS = 60 * 1000;

export type CsrfVerdict = "VALID" | "MALFORMED" | "BAD_SIGNATURE" | "EXPIRED";

function bindingOf(session: string | null): string {
  return session === null ? "" : new Bun.CryptoHasher("sha256").update(session).digest("base64url");
}

function sign(key: string, issuedAt: string, nonce: string, session: string | null): string {
  return new Bun.CryptoHasher("sha256", key)
    .update(`${issuedAt}.${nonce}.${bindingOf(session)}`)
    .digest("base64url");
}

export function issueCsrfToken(key: string, session: string | null, now: number): string {
  const issuedAt = String(now);
  const nonce = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64url");
  return `${issuedAt}.${nonce}.${sign(key, issuedAt, nonce, session)}`;
}

export function constantTimeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && crypto.timingSafeEqual(left, right);
}

/**
 * Checks a token against the current key and, while a rotation is under way, the previous one
 * (`keys` is one key or `[current, previous]`): tokens signed with either are accepted.
 */
export function verifyCsrfToken(
  keys: string | readonly string[],
  token: string,
  session: string | null,
  now: number,
): CsrfVerdict {
  const parts = token.split(".");
  if (parts.length !== 3 || !/^\d{1,15}$/.test(parts[0]!)) return "MALFORMED";
  const [issuedAt, nonce, signature] = parts as [string, string, string];
  const candidates = typeof keys === "string" ? [keys] : keys;
  // Every key is tried, so the time taken does not say which one signed.
  let signed = false;
  for (const key of candidates) {
    if (constantTimeEqual(signature, sign(key, issuedAt, nonce, session))) signed = true;
  }
  if (!signed) return "BAD_SIGNATURE";
  const age = now - Number(issuedAt);
  if (age > CSRF_TOKEN_LIFETIME_MS || age < -CLOCK_SKEW_MS) return "EXPIRED";
  return "VALID";
}
