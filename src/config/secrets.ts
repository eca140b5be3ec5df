/**
 * @module
 * Secret strength and generation. A secret is weak when it is short (under 32 bytes, the HMAC-SHA256
 * block of entropy the token schemes rely on), repetitive, or still a placeholder copied from
 * `.env.example`.
 */

export const MIN_SECRET_BYTES = 32;
/** The prefix a provider writes before an issued secret (Stripe's `whsec_`): not the secret's own. */
const ISSUER_PREFIX = /^whsec_/;
const MIN_DISTINCT_CHARACTERS = 10;
const PLACEHOLDER = /change[-_ ]?me|replace[-_ ]?me|example|placeholder|^x+$/i;
// Words of a value someone wrote rather than generated: the published defaults of tutorials and
// other products (`super-secret-jwt-token-with-at-least-32-characters-long`, `your-…-key-here`)
// pass the length and variety checks, and are the first an attacker tries (probe 35c F2). A
// generated 43-character base64url value holds one of these by a chance of about one in 500,000
// (`your-`, `-here-`): refused, with the reason, and generated again.
const WRITTEN =
  /secret|passw(or)?d|default|sample|insecure|do[-_ ]?not[-_ ]?use|your[-_ .]|[-_ .]here([-_ .]|$)/i;

/** Why a secret is too weak to use in a deployed profile, or `null` when it is acceptable. */
export function secretWeakness(value: string): string | null {
  if (Buffer.byteLength(value, "utf8") < MIN_SECRET_BYTES) {
    return `is shorter than ${MIN_SECRET_BYTES} bytes`;
  }
  if (new Set(value).size < MIN_DISTINCT_CHARACTERS) return "is too repetitive to be random";
  if (isMostlyRun(value)) return "is a run of neighbouring characters, not a generated secret";
  if (PLACEHOLDER.test(value)) return "is a placeholder, not a generated secret";
  if (WRITTEN.test(value))
    return "reads as a written phrase or a published default, not a generated secret";
  return null;
}

/**
 * Why a secret a provider issued (Meta's app secret, Stripe's `whsec_…`) is too weak to use in a
 * deployed profile, or `null`: too short, or a placeholder or phrase someone wrote in its place. The
 * distinct-character and run checks keep only the obvious (three characters or fewer): they find
 * values a person made up, and refused about one in 9,000 of Meta's random 32 hexadecimal
 * characters, which the operator cannot choose.
 */
export function issuedSecretWeakness(value: string): string | null {
  if (Buffer.byteLength(value, "utf8") < MIN_SECRET_BYTES) {
    return `is shorter than ${MIN_SECRET_BYTES} bytes`;
  }
  // Four: a random value of 32 characters has fewer by a chance of about 1e-21. Counted after the
  // issuer's prefix, whose own letters made `whsec_` and 32 `a`s pass (probe 45a).
  if (new Set(value.replace(ISSUER_PREFIX, "")).size < 4) return "is too repetitive to be random";
  if (PLACEHOLDER.test(value)) return "is a placeholder, not a generated secret";
  if (WRITTEN.test(value))
    return "reads as a written phrase or a published default, not a generated secret";
  return null;
}

/**
 * Whether most neighbouring characters are the same or one apart (`abcdef…`, `0123…0123`,
 * `zyxw…`): such a value passes the length and distinct-character checks and is found by anyone
 * who tries the obvious (probe 30d F2). In a random base64 value about one neighbour in twenty is.
 */
function isMostlyRun(value: string): boolean {
  let neighbours = 0;
  for (let i = 1; i < value.length; i++) {
    if (Math.abs(value.charCodeAt(i) - value.charCodeAt(i - 1)) <= 1) neighbours++;
  }
  return neighbours * 2 > value.length - 1;
}

/** A fresh 256-bit secret, base64url, for development runs that did not supply one. */
export function generateSecret(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
}
