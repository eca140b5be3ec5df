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
  const points = [...value];
  if (new Set(points).size < MIN_DISTINCT_CHARACTERS || repeatsItself(points)) {
    return "is too repetitive to be random";
  }
  if (isMostlyRun(points)) {
    return "is a run of neighbouring characters or keys, not a generated secret";
  }
  if (PLACEHOLDER.test(value)) return "is a placeholder, not a generated secret";
  if (WRITTEN.test(value) || isWordsOnly(value))
    return "reads as a written phrase or a published default, not a generated secret";
  return null;
}

/**
 * Whether the value says the same thing again: a quarter or more of its four-character pieces
 * occur earlier in it (`aZ3$kL9!mQ` four times passed with ten distinct characters; probe 71a F2).
 * In a random hex value of 32 bytes one repeated piece is about a chance in 35 and a quarter of
 * them none at all (no refusal in 600,000 generated base64, base64url and hex values).
 */
function repeatsItself(points: readonly string[]): boolean {
  const pieces = points.length - 3;
  if (pieces <= 0) return false;
  const seen = new Set<string>();
  let repeated = 0;
  for (let i = 0; i < pieces; i++) {
    const piece = points[i]! + points[i + 1]! + points[i + 2]! + points[i + 3]!;
    if (seen.has(piece)) repeated++;
    else seen.add(piece);
  }
  return repeated * 4 >= pieces;
}

/**
 * Words of letters only (lower case or capitalised), four or more, between spaces or punctuation:
 * a sentence or a passphrase someone wrote (`the quick brown fox jumps over the lazy dog` passed
 * every other check; probe 71a F2). A random base64url value is all letters in words of one case
 * by a chance far below one in a billion.
 */
function isWordsOnly(value: string): boolean {
  const words = value.split(/[\s\-_.,;:!?'"]+/u).filter((word) => word !== "");
  return words.length >= 4 && words.every((word) => /^\p{Lu}?[\p{Ll}]+$/u.test(word));
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

/** The rows of a US keyboard, for the walks along them (`qwerty…`, `asdf…`). */
const KEY_ROWS = ["`1234567890-=", "qwertyuiop[]\\", "asdfghjkl;'", "zxcvbnm,./"];
const KEY_PLACES = new Map<string, number>();
KEY_ROWS.forEach((row, r) => {
  for (let i = 0; i < row.length; i++) KEY_PLACES.set(row[i]!, r * 100 + i);
});

/** Whether two characters are keys side by side on one row of a keyboard, in either case. */
function sideBySideKeys(a: string, b: string): boolean {
  const first = KEY_PLACES.get(a.toLowerCase());
  const second = KEY_PLACES.get(b.toLowerCase());
  return first !== undefined && second !== undefined && Math.abs(first - second) === 1;
}

/**
 * Whether most neighbouring characters are the same or one apart (`abcdef…`, `0123…0123`,
 * `zyxw…`, and emoji next to each other in Unicode) or keys side by side (`qwertyuiop…`): such a
 * value passes the length and distinct-character checks and is found by anyone who tries the
 * obvious (probes 30d F2, 71a F2). Compared by code point, so a character outside the BMP is one.
 * In a random base64 value about one neighbour in nine is either.
 */
function isMostlyRun(points: readonly string[]): boolean {
  let neighbours = 0;
  for (let i = 1; i < points.length; i++) {
    const before = points[i - 1]!;
    const here = points[i]!;
    if (
      Math.abs(here.codePointAt(0)! - before.codePointAt(0)!) <= 1 ||
      sideBySideKeys(before, here)
    ) {
      neighbours++;
    }
  }
  return neighbours * 2 > points.length - 1;
}

/** A fresh 256-bit secret, base64url, for development runs that did not supply one. */
export function generateSecret(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
}
