/**
 * @module
 * Secret strength and generation. A secret is weak when it is short (under 32 bytes, the HMAC-SHA256
 * block of entropy the token schemes rely on, and under 32 characters as read), repetitive, a run
 * of neighbouring characters or keys, a placeholder copied from `.env.example`, or reads as written
 * words. It finds the shapes people write; it does not measure strength.
 */
import { ENGLISH_BIGRAMS } from "./english-bigrams";

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
  // Judged as read, not as typed: a fullwidth `ｃｈａｎｇｅｍｅ` is `changeme` at three bytes a
  // letter, and a sentence of eleven CJK characters is 33 bytes (probe 71d F2).
  const text = value.normalize("NFKC");
  const points = [...text];
  if (points.length < MIN_SECRET_BYTES) return `is shorter than ${MIN_SECRET_BYTES} characters`;
  if (new Set(points).size < MIN_DISTINCT_CHARACTERS || repeatsItself(points)) {
    return "is too repetitive to be random";
  }
  if (isMostlyRun(points)) {
    return "is a run of neighbouring characters or keys, not a generated secret";
  }
  if (PLACEHOLDER.test(text)) return "is a placeholder, not a generated secret";
  if (WRITTEN.test(text) || readsAsWritten(text, points))
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
 * Whether the value reads as something written rather than generated (probes 71a F2, 71d F2):
 * - mostly letters of a script without case (a Chinese, Japanese or Thai sentence): no generator
 *   a deployment uses writes them;
 * - words and numbers between any punctuation (`Correct-Horse-Battery-Staple-42`,
 *   `john.smith@example.com:prod-2024`, `palisade|production|jwt|key|2024`): three words of two
 *   letters or more, their letters at least half the value, a word lower case, capitalised, upper
 *   case, or capitalised words joined (`MyCompanyJwtKey`), and the letters no less English than
 *   chance (`englishEvidence` ≥ 0: random printable ASCII cut into short pieces is words by case);
 * - letters English explains far better than chance, whatever separates them or not
 *   (`correcthorsebatterystapleisgreat`): `englishEvidence` of 24 bits or more in words of three
 *   letters or more that make three quarters of the value.
 * It is a check for the shapes people write, not a strength meter: l33t (`c0rr3ct`), words run
 * together whose letters are unusual, names and acronyms pass it. A generated value (base64,
 * base64url, hex, base32, UUIDs, random letters or printable ASCII) was none of these in 100,000 of
 * each: each piece between its punctuation must be a word, and 24 bits of evidence come to random
 * letters by a chance of at most 2⁻²⁴ (Markov's inequality on the likelihood ratio).
 */
function readsAsWritten(text: string, points: readonly string[]): boolean {
  const uncased = points.filter((point) => /\p{Lo}/u.test(point)).length;
  if (uncased * 2 >= points.length) return true;
  if (isWordsAndNumbers(text, points.length)) return true;
  // Words of three letters or more, three quarters of the value: a label before a generated part
  // (`production-signing-key-` and 43 characters of base64url) is neither its strength nor its
  // weakness, and its evidence could carry the generated part's few words past the threshold.
  const words = latinWords(text).filter((word) => word.length >= 3);
  const letters = words.reduce((sum, word) => sum + word.length, 0);
  return letters * 4 >= points.length * 3 && englishEvidence(words) >= WRITTEN_EVIDENCE_BITS;
}

const WRITTEN_EVIDENCE_BITS = 24;

/** One piece between punctuation: letters, then digits if any (`v2`, `Summer2024`), or digits. */
const PIECE = /^(\p{L}*)(\p{N}*)$/u;
/** Letters as words are written: `word`, `Word`, `WORD`, `WordWord`, `wordWord`. */
const ONE_WORD = /^(?:\p{Lu}+|\p{Lu}?\p{Ll}+)$/u;
const JOINED_WORDS = /^\p{Lu}?\p{Ll}+(?:\p{Lu}\p{Ll}+)+$/u;

function isWordsAndNumbers(text: string, length: number): boolean {
  if (englishEvidence(latinWords(text)) < 0) return false;
  let words = 0;
  let letters = 0;
  for (const piece of text.split(/[^\p{L}\p{N}]+/u)) {
    if (piece === "") continue;
    const [, word = "", digits = ""] = PIECE.exec(piece) ?? [];
    if (word === "" && digits === "") return false;
    if (word === "") continue;
    if (ONE_WORD.test(word)) {
      // A letter alone is a word too (`a`, `I`), but random punctuation leaves many of them.
      if (word.length < 2) continue;
      words++;
    } else if (JOINED_WORDS.test(word) && englishEvidence(latinWords(word)) >= 0) {
      // Random letters fall into this case pattern often enough; English letters they are not.
      words += word.match(/\p{Lu}/gu)?.length ?? 0;
      if (/^\p{Ll}/u.test(word)) words++;
    } else {
      return false;
    }
    letters += [...word].length;
  }
  return words >= 3 && letters * 2 >= length;
}

/** The runs of Latin letters, split where a capital follows a small letter, in lower case. */
function latinWords(text: string): string[] {
  return (text.match(/[A-Z]+(?![a-z])|[A-Z]?[a-z]+/g) ?? []).map((word) => word.toLowerCase());
}

/**
 * How many bits more likely the words' letters are English (`ENGLISH_BIGRAMS`, each word scored
 * from its start) than letters drawn at random from the alphabet they seem to be drawn from (a to
 * f when those are all there are, else the 26). Generated letters score below zero: about −1 bit a
 * letter.
 */
function englishEvidence(words: readonly string[]): number {
  const chanceBits = words.every((word) => /^[a-f]*$/.test(word)) ? Math.log2(6) : Math.log2(26);
  let halfBits = 0;
  let letters = 0;
  for (const word of words) {
    let row = 0;
    for (let i = 0; i < word.length; i++) {
      const letter = word.charCodeAt(i) - 97;
      halfBits += ENGLISH_BIGRAMS[row * 26 + letter]!;
      row = letter + 1;
    }
    letters += word.length;
  }
  return letters * chanceBits - halfBits / 2;
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
 * Keyboard layouts as rows of keys, each row's left edge in key widths from the top row's (a
 * staggered keyboard): a walk along a row (`qwertyuiop`), down a column (`1qaz2wsx`) or on
 * another country's layout (`azertyuiop`, `qwertzuiop`, Dvorak's `aoeuidhtns`) is a run too.
 */
const LAYOUTS: readonly (readonly [row: string, offset: number][])[] = [
  [
    ["`1234567890-=", 0],
    ["qwertyuiop[]\\", 1.5],
    ["asdfghjkl;'", 1.75],
    ["zxcvbnm,./", 2.25],
  ],
  [
    ["^1234567890ß´", 0],
    ["qwertzuiopü+", 1.5],
    ["asdfghjklöä#", 1.75],
    ["<yxcvbnm,.-", 1.25],
  ],
  [
    ["²&é\"'(-è_çà)=", 0],
    ["azertyuiop^$", 1.5],
    ["qsdfghjklmù*", 1.75],
    ["<wxcvbn,;:!", 1.25],
  ],
  [
    ["`1234567890[]", 0],
    ["',.pyfgcrl/=\\", 1.5],
    ["aoeuidhtns-", 1.75],
    [";qjkxbmwvz", 2.25],
  ],
];

/** For each layout, where each key sits: its row and its left edge. */
const KEY_PLACES: readonly Map<string, { row: number; x: number }>[] = LAYOUTS.map((rows) => {
  const places = new Map<string, { row: number; x: number }>();
  rows.forEach(([keys, offset], row) => {
    [...keys].forEach((key, i) => {
      places.set(key, { row, x: offset + i });
    });
  });
  return places;
});

/**
 * Whether two characters are keys that touch on the layout, in either case: side by side on a
 * row, or on the rows above and below with their edges less than a key apart.
 */
function touchingKeys(places: Map<string, { row: number; x: number }>, a: string, b: string) {
  const first = places.get(a.toLowerCase());
  const second = places.get(b.toLowerCase());
  if (first === undefined || second === undefined) return false;
  const across = Math.abs(first.x - second.x);
  if (first.row === second.row) return across === 1;
  return Math.abs(first.row - second.row) === 1 && across < 1;
}

/**
 * Whether most neighbouring characters are the same or one apart (`abcdef…`, `0123…0123`,
 * `zyxw…`, and emoji next to each other in Unicode) or keys that touch on one keyboard layout
 * (`qwertyuiop…`, `1qaz2wsx…`): such a value passes the length and distinct-character checks and
 * is found by anyone who tries the obvious (probes 30d F2, 71a F2, 71d F2). Compared by code
 * point, so a character outside the BMP is one. In a random base64 value about one neighbour in
 * five is either on the layout that finds the most.
 */
function isMostlyRun(points: readonly string[]): boolean {
  const pairs = points.length - 1;
  return KEY_PLACES.some((places) => {
    let inWalks = 0;
    let walk = 0;
    for (let i = 1; i <= pairs; i++) {
      const before = points[i - 1]!;
      const here = points[i]!;
      if (
        Math.abs(here.codePointAt(0)! - before.codePointAt(0)!) <= 1 ||
        touchingKeys(places, before, here)
      ) {
        walk++;
        if (walk === MIN_WALK_PAIRS) inWalks += walk;
        else if (walk > MIN_WALK_PAIRS) inWalks++;
      } else {
        walk = 0;
      }
    }
    return inWalks * 3 > pairs * 2;
  });
}

/** Four characters in a row, each next to the one before: a walk, not a chance meeting. */
const MIN_WALK_PAIRS = 3;

/** A fresh 256-bit secret, base64url, for development runs that did not supply one. */
export function generateSecret(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
}
