/**
 * @module
 * Secret strength and generation. A secret is weak when it is short (under 32 bytes, the HMAC-SHA256
 * block of entropy the token schemes rely on, and under 32 characters as read), repetitive, a walk
 * (keyboard-walks.ts), a placeholder copied from `.env.example`, a command never run, reads as
 * written words (written-text.ts), or is hex or base64 of text that is weak so. It finds the shapes
 * people write; it does not measure strength.
 */
import { readAsLatin, seenCharacters } from "../look-alikes";
import { isMostlyWalk } from "./keyboard-walks";
import { readsAsWritten } from "./written-text";

export const MIN_SECRET_BYTES = 32;
/** The prefix a provider writes before an issued secret (Stripe's `whsec_`): not the secret's own. */
const ISSUER_PREFIX = /^whsec_/;
const MIN_DISTINCT_CHARACTERS = 10;
const PLACEHOLDER = /change[-_. ]*me|replace[-_. ]*me|example|placeholder|^x+$/i;
// Words of a value someone wrote rather than generated: the published defaults of tutorials and
// other products (`super-secret-jwt-token-with-at-least-32-characters-long`, `your-…-key-here`)
// pass the length and variety checks, and are the first an attacker tries (probe 35c F2). As
// words, not anywhere in the value: a generated value held `passwd`, `SECRET` or `Your-` among its
// letters about once in 200,000 (probe 72b F1). A long one may stand between capitals
// (`JwtSecretKey`); `your` and `here` only between `-`, `_`, `.`, spaces or an end (`E5here4u`
// was a base64 value).
const WRITTEN_WORDS = new Set([
  "secret",
  "secrets",
  "password",
  "passwords",
  "passwd",
  "default",
  "sample",
  "insecure",
]);
const WRITTEN_PHRASE = /(?:^|[-_ .])(?:your|here|do[-_ .]*not[-_ .]*use)(?:[-_ .]|$)/i;

/** Whether the value holds one of the words of published defaults (`WRITTEN_WORDS`). */
function holdsDefaultsWord(text: string): boolean {
  if (WRITTEN_PHRASE.test(text)) return true;
  const words = text.match(/\p{Lu}+(?!\p{Ll})|\p{Lu}?\p{Ll}+/gu) ?? [];
  // A run of capitals before small letters is read as a word and the next one's capital
  // (`JSONParser`), which split `jwtSECRETkey` into `SECRE` and `Tkey` (probe 73a F4): the whole
  // run is a word too.
  const capitals = text.match(/\p{Lu}+/gu) ?? [];
  return [...words, ...capitals].some((word) => WRITTEN_WORDS.has(word.toLowerCase()));
}

// A command or template that was never run or filled in: `JWT_SECRET_KEY=$(openssl rand …)` in a
// compose env file, a systemd EnvironmentFile or a manifest is that text, and the key is then the
// README's own public command (probe 72b F2). The whole value wrapped in a command's or template's
// marks with a word and a space inside (`openssl `, `echo `), a template's with a word inside
// (`{{ lookup('env', …) }}`, `<%= ENV.fetch(…) %>`, probe 73a F2), or naming the generator: a
// random printable value with spaces (KeePass's set) starts with a backtick and holds a space
// about once in 170 (probe 72c A3), and with a lower-case word of three letters before the space
// far less; it starts and ends with a template's four marks about once in 80 million.
const COMMAND_WRAPPED = /^\s*(?:\$\(.*\)|`.*`|\$\{.*\})\s*$/s;
const TEMPLATE_WRAPPED = /^\s*(?:\{\{.*\}\}|\{%.*%\}|<%.*%>)\s*$/s;
// Three letters, not three or more: `{3,}` tried every longer run from every letter of it, seconds
// on a 64 KiB value of small letters (probe 73a F1); a match of one is a match of the other.
const COMMAND_WORD = /[a-z]{3}\s/;
const TEMPLATE_WORD = /[a-z]{3}/;
const GENERATOR = /openssl\s+rand|\/dev\/u?random/i;

/** Whether the value is a command or template someone meant to run or fill in. */
function isUnexpanded(text: string): boolean {
  return (
    GENERATOR.test(text) ||
    (COMMAND_WRAPPED.test(text) && COMMAND_WORD.test(text)) ||
    (TEMPLATE_WRAPPED.test(text) && TEMPLATE_WORD.test(text))
  );
}

/** Why a secret is too weak to use in a deployed profile, or `null` when it is acceptable. */
export function secretWeakness(value: string): string | null {
  // As a reader sees it: what draws nothing (variation selectors, tags, blank letters) is no
  // character, and ten of them made `hunter2` a 32-character secret (probe 75b F3).
  const text = seenCharacters(value);
  const points = [...text];
  const short = shortness(value, text);
  if (short) return short;
  const encoded = encodedText(text);
  if (encoded !== null) {
    // What was encoded is the secret: `echo -n … | base64` hides no word and adds no bit.
    const weakness = secretWeakness(encoded.text);
    if (weakness !== null) return `is ${encoded.encoding} of text that ${weakness}`;
  }
  // Repetition as read without case: a block said again in other capitals
  // (`aZ3$kL9!mQAz3$Kl9!Mq…`) passed (probe 73a).
  if (new Set(points).size < MIN_DISTINCT_CHARACTERS || repeatsItself([...text.toLowerCase()])) {
    return "is too repetitive to be random";
  }
  if (isMostlyWalk(points)) {
    return "is a run of neighbouring characters or keys, not a generated secret";
  }
  return writtenWeakness(text);
}

const HEX = /^(?:0x)?((?:[0-9a-f]{2})+)$/i;
const BASE32 = /^(?:[A-Z2-7]+|[a-z2-7]+)=*$/;
const BASE64 = /^[A-Za-z0-9+/_-]+=*$/;
/**
 * Text as people write it: no control but a tab or a line break, no unpaired surrogate, no
 * replacement character.
 */
const PRINTABLE_TEXT = /^(?:[\t\n\r]|[^\p{Cc}\p{Cs}\uFFFD])+$/u;
/** A tab or a line break inside encoded text: the words either side of it are apart. */
const TEXT_BREAKS = /[\t\r\n]+/g;

/**
 * The text a hex, base32 or base64 value encodes (around any space, hex after `0x`), when it
 * decodes to printable UTF-8, UTF-16 or UTF-32 text (a phrase, a label, a password run through
 * `base64`, `base32`, `xxd -p` or PowerShell's `[Text.Encoding]::Unicode`); null otherwise.
 * Generated bytes are text so rarely (16 random bytes about once in 250,000 to 600,000, as UTF-8
 * with a few non-ASCII characters, probe 77a F1; 32 never in practice) that a value which decodes
 * to text was text first.
 */
function encodedText(value: string): { encoding: string; text: string } | null {
  const text = value.trim();
  const hex = HEX.exec(text);
  if (hex !== null) {
    const written = textOf(Buffer.from(hex[1]!, "hex"));
    if (written !== null) return { encoding: "hex", text: written };
  }
  if (BASE32.test(text)) {
    const written = textOf(base32Bytes(text));
    if (written !== null) return { encoding: "base32", text: written };
  }
  if (BASE64.test(text)) {
    const written = textOf(Buffer.from(text, "base64"));
    if (written !== null) return { encoding: "base64", text: written };
  }
  return null;
}

/**
 * The printable text the bytes are, as UTF-8, UTF-16 or UTF-32 (wideText); without the line
 * endings and NULs at its end, each other line break a space.
 */
function textOf(bytes: Uint8Array): string | null {
  const wide = wideText(bytes);
  const decoded = wide === undefined ? utf8Text(bytes) : wide;
  if (decoded === null) return null;
  // `echo 'phrase' | base64` encodes the phrase and echo's line ending (`\r\n` from Windows'
  // echo), and a file of lines encodes its breaks: text all the same (probes 75b F4, 75e F5); a C
  // string its NUL.
  let end = decoded.length;
  while (end > 0 && "\n\r\0".includes(decoded[end - 1]!)) end--;
  const written = decoded.slice(0, end);
  if (written === "" || !PRINTABLE_TEXT.test(written)) return null;
  return written.replace(TEXT_BREAKS, " ");
}

/** The text of UTF-8 bytes; null when they are not UTF-8. */
function utf8Text(bytes: Uint8Array): string | null {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

/**
 * The text of bytes in UTF-32 or UTF-16 (null when they are that but not valid), or undefined when
 * they are neither. UTF-32 after its byte order mark (PowerShell's `-Encoding utf32`, probe 78b
 * F5), or with the three high bytes of every character 0; UTF-16 with every other byte 0 (text of
 * the first 256 code points, PowerShell's `[Text.Encoding]::Unicode`), or after its byte order
 * mark (`Out-File -Encoding unicode`, probe 77a F4) when at least half of its characters are of
 * the first 256: random bytes open with a mark once in 32,768 and then read as characters of any
 * script, while text typed with a dash or curly quotes beside its words (`don’t share it`) is
 * still the words (probe 78b F4).
 */
function wideText(bytes: Uint8Array): string | null | undefined {
  const wide = utf32Text(bytes);
  if (wide !== undefined) return wide;
  if (bytes.length < 4 || bytes.length % 2 !== 0) return undefined;
  const littleMark = bytes[0] === 0xff && bytes[1] === 0xfe;
  const bigMark = bytes[0] === 0xfe && bytes[1] === 0xff;
  let oddZero = true;
  let evenZero = true;
  for (let i = littleMark || bigMark ? 2 : 0; i < bytes.length; i += 2) {
    if (bytes[i] !== 0) evenZero = false;
    if (bytes[i + 1] !== 0) oddZero = false;
  }
  const zeros = oddZero ? "utf-16le" : evenZero ? "utf-16be" : null;
  const encoding = littleMark ? "utf-16le" : bigMark ? "utf-16be" : zeros;
  if (encoding === null) return undefined;
  let text: string;
  try {
    // The decoder drops a mark that opens the text.
    text = new TextDecoder(encoding, { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
  if (encoding === zeros) return text;
  let narrow = 0;
  let all = 0;
  for (const character of text) {
    all++;
    if (character.codePointAt(0)! < 0x100) narrow++;
  }
  return all > 0 && narrow * 2 >= all ? text : null;
}

/** The text of UTF-32 bytes (see wideText), null when not valid, undefined when not UTF-32. */
function utf32Text(bytes: Uint8Array): string | null | undefined {
  if (bytes.length < 8 || bytes.length % 4 !== 0) return undefined;
  const at = (i: number, little: boolean) =>
    little
      ? bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)
      : bytes[i + 3]! | (bytes[i + 2]! << 8) | (bytes[i + 1]! << 16) | (bytes[i]! << 24);
  const littleMark = at(0, true) === 0xfeff;
  const bigMark = at(0, false) === 0xfeff;
  let little = littleMark;
  if (!littleMark && !bigMark) {
    let littleShape = true;
    let bigShape = true;
    for (let i = 0; i < bytes.length; i += 4) {
      if (bytes[i + 1] !== 0 || bytes[i + 2] !== 0 || bytes[i + 3] !== 0) littleShape = false;
      if (bytes[i] !== 0 || bytes[i + 1] !== 0 || bytes[i + 2] !== 0) bigShape = false;
    }
    if (littleShape === bigShape) return undefined;
    little = littleShape;
  }
  let text = "";
  for (let i = littleMark || bigMark ? 4 : 0; i < bytes.length; i += 4) {
    const point = at(i, little) >>> 0;
    if (point > 0x10ffff || (point >= 0xd800 && point <= 0xdfff)) return null;
    text += String.fromCodePoint(point);
  }
  return text;
}

const BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** RFC 4648's base32, in either case, padded or not. */
function base32Bytes(text: string): Uint8Array {
  const bytes: number[] = [];
  let buffer = 0;
  let bits = 0;
  for (const character of text.toUpperCase()) {
    const value = BASE32_ALPHABET.indexOf(character);
    if (value < 0) break;
    buffer = ((buffer << 5) | value) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((buffer >> bits) & 0xff);
    }
  }
  return Uint8Array.from(bytes);
}

/**
 * Under 32 bytes, or under 32 characters as read (`read`: the value NFKC, what draws nothing
 * dropped, each character with its marks one, as Unicode's grapheme clusters count them): a
 * fullwidth `ｃｈａｎｇｅｍｅ` is `changeme` at three bytes a letter, a sentence of eleven CJK
 * characters is 33 bytes (probe 71d F2), and `hunter2` with 25 combining marks on its letters is
 * seven characters (probe 76c F5).
 */
function shortness(value: string, read: string): string | null {
  if (Buffer.byteLength(value, "utf8") < MIN_SECRET_BYTES) {
    return `is shorter than ${MIN_SECRET_BYTES} bytes`;
  }
  if (charactersUpTo(read, MIN_SECRET_BYTES) < MIN_SECRET_BYTES) {
    return `is shorter than ${MIN_SECRET_BYTES} characters`;
  }
  return null;
}

const MARKS = /\p{Mn}/gu;

const GRAPHEMES = new Intl.Segmenter("en", { granularity: "grapheme" });

/** How many characters (grapheme clusters) the text has, counted up to `most`. */
function charactersUpTo(text: string, most: number): number {
  let count = 0;
  for (const _ of GRAPHEMES.segment(text)) if (++count >= most) break;
  return count;
}

/**
 * A placeholder, a command never run, a published default or a phrase (as read, NFKC), its
 * as spelt and with its letters that only look Latin read as Latin (`асme-рrоd-jwt-…` with
 * Cyrillic а, с, р, о passed every word rule, probe 75b F2; a Russian phrase is read as spelt).
 */
function writtenWeakness(seen: string): string | null {
  // Accents off too: `àcmè-pròd-jwt-sìgnìng-kèy-…` is the label it shows (probe 76c F5).
  const latin = readAsLatin(seen).normalize("NFD").replace(MARKS, "").normalize("NFC");
  return writtenWeaknessAsSpelt(seen) ?? (latin === seen ? null : writtenWeaknessAsSpelt(latin));
}

function writtenWeaknessAsSpelt(text: string): string | null {
  if (PLACEHOLDER.test(text)) return "is a placeholder, not a generated secret";
  if (isUnexpanded(text)) {
    return "is a command or template that was never run or filled in, not a generated secret";
  }
  if (holdsDefaultsWord(text) || readsAsWritten(text))
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
 * Why a secret a provider issued (Meta's app secret, Stripe's `whsec_…`) is too weak to use in a
 * deployed profile, or `null`: too short, or a placeholder, command or phrase someone wrote in its
 * place, or a block said again (`letmeinletmeinletmein…`), judged after the issuer's prefix and as
 * read (probes 72b F6, 72c A5: `whsec_ThisIsOur…` and a fullwidth `changeme` passed). The
 * distinct-character and walk checks keep only the obvious (three characters or fewer): they find
 * values a person made up, and refused about one in 9,000 of Meta's random 32 hexadecimal
 * characters, which the operator cannot choose.
 */
export function issuedSecretWeakness(value: string): string | null {
  const short = shortness(value, value.normalize("NFKC"));
  if (short) return short;
  const own = value.replace(ISSUER_PREFIX, "").normalize("NFKC");
  // Four: a random value of 32 characters has fewer by a chance of about 1e-21. Counted after the
  // issuer's prefix, whose own letters made `whsec_` and 32 `a`s pass (probe 45a).
  if (new Set(own).size < 4 || repeatsItself([...own])) return "is too repetitive to be random";
  return writtenWeakness(own);
}

/** A fresh 256-bit secret, base64url, for development runs that did not supply one. */
export function generateSecret(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
}
