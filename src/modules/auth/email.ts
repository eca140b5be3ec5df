/**
 * @module
 * Email addresses as accounts. One address has many spellings that a person reads as the same
 * (`émile` composed or decomposed, fullwidth `ｔ１`, `ＥＸＡＭＰＬＥ.com`, `example.com.`), and some
 * that look the same but are not (`t1\u200b`). An account must not be registrable twice through
 * them, so every address goes through one normalisation before it is stored or looked up:
 *
 * 1. trimmed, then NFKC (compatibility forms fold: fullwidth, ligatures, composed vs decomposed);
 * 2. refused if any control, format, private-use, unassigned, surrogate, separator, U+FFFD or
 *    default-ignorable (invisible: zero-width space and joiners, soft hyphen, BOM, variation
 *    selectors, Hangul fillers) character is left;
 * 3. refused if a combining mark is left with no letter of its own script to sit on (after NFKC,
 *    one at the start or after an ASCII character: Khmer's coeng or a virama after `kim`), or if a
 *    letter known to render blank is there (Hangul fillers, the blank Khitan character);
 * 4. what is left may hold only letters, marks and digits of any script, and in the local part the
 *    ASCII punctuation RFC 5322 allows: symbols and other punctuation are refused, since some of
 *    them render as nothing (U+2800 BRAILLE PATTERN BLANK, U+1D159 MUSICAL SYMBOL NULL NOTEHEAD)
 *    while being ordinary characters to Unicode, so no "invisible" property catches them;
 * 5. the domain: the ideographic full stops IDNA reads as dots mapped to `.`, its one trailing dot
 *    dropped, then IDNA-mapped to ASCII (`domainToASCII`: case, width and Unicode labels to
 *    `xn--`), and checked as a host name;
 * 6. the local part is kept as typed (it is the mailbox owner's, and may be case-sensitive), but
 *    uniqueness and every lookup compare the `key`: the local part case-folded (upper then lower, so
 *    `ß` meets `SS`, and NFKC again, until stable: `ẞ` meets both) at the ASCII domain.
 *
 * Written here because no small library does exactly this; the Unicode work is the platform's
 * (`String.normalize`, Unicode property escapes, node:url's IDNA).
 */
import { domainToASCII } from "node:url";
import { readAsLatin } from "../../look-alikes";

export const MAX_EMAIL_LENGTH = 254;
/**
 * The longest stored text read as an address that may not be normalised yet (a row stored before
 * normalisation, its reading): NFKC can shorten a text (three jamo compose to one Hangul
 * syllable) and the trim takes padding off (a CHAR(255) column's), so such text is read up to
 * this many characters (probe 94a F3, 94d F3), and no further: a longer value is no address.
 */
export const STORED_ADDRESS_LONGEST = 4 * MAX_EMAIL_LENGTH;
/**
 * The same bound in bytes, as SQL reads it without reading the text (`octet_length`): SQLite's
 * `length` of a text counts up to its first NUL, so a value of megabytes behind one passed it
 * (probe 94d F1), and bun:sqlite hands over the whole value.
 */
export const STORED_ADDRESS_BYTES = 4 * STORED_ADDRESS_LONGEST;
const MAX_LOCAL_LENGTH = 64;
/** Characters that are invisible, control or otherwise not part of any real address. */
const FORBIDDEN =
  /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}\p{Default_Ignorable_Code_Point}\s\uFFFD]/u;
/**
 * A combining mark with no letter of its own script to sit on (at the start, or after an ASCII
 * character, `@` or `.`): NFKC has already composed the ones that combine with Latin letters
 * (`e` + U+0301 is `é`), so what is left renders as nothing or as a stray accent. Khmer's coeng,
 * the viramas and the Khitan filler are marks like this.
 */
const ORPHAN_MARK = /(?:^|\p{ASCII})\p{M}/u;
/**
 * Letters that render as nothing. Unicode has no property for "blank glyph", so these are listed:
 * the Hangul fillers (also default-ignorable) and the blank Khitan small-script character.
 */
const BLANK_LETTERS = /[\u115f\u1160\u3164\uffa0\u{18cff}]/u;
/** A local part: letters, marks and digits of any script, and RFC 5322's ASCII `atext` and dots. */
const LOCAL_PART = /^[\p{L}\p{M}\p{N}!#$%&'*+\-/=?^_`{|}~.]+$/u;
/** A domain before IDNA: letters, marks and digits of any script, hyphens and dots. */
const DOMAIN_PART = /^[\p{L}\p{M}\p{N}.-]+$/u;
/** The full stops UTS #46 reads as label separators (ideographic, fullwidth, halfwidth). */
const IDEOGRAPHIC_DOTS = /[\u3002\uFF0E\uFF61]/g;
/** A host name in ASCII: dot-separated labels of letters, digits and inner hyphens. */
const HOST_NAME = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/;

export interface NormalizedEmail {
  /** What is stored and shown: NFKC, the domain in lower-case ASCII. */
  email: string;
  /** What uniqueness and lookups compare: `email` with its local part case-folded. */
  key: string;
}

export type EmailVerdict =
  | ({ ok: true } & NormalizedEmail)
  | { ok: false; reason: "invisible_characters" | "not_an_address" };

/** Why an address is refused, as the API's 422 and the CLI say it (never echoing the address). */
export const INVALID_EMAIL_MESSAGES = {
  invisible_characters: "Must not contain invisible, control or unpaired surrogate characters",
  not_an_address: "Expected an email address",
  mixed_scripts:
    "Must not mix letters of different scripts before the @, but Latin with Han, kana or Hangul (letters of different scripts look alike)",
} as const;

/**
 * Upper then lower case, NFKC, until nothing changes: once is not stable for the capital `ẞ`,
 * which one pass leaves as `ß` and a second makes `ss` (probe 91i F4: an account registered as
 * `straße` could not sign in as `STRAẞE`). Over every code point of Bun's Unicode, `ẞ` is the only
 * one a second pass changes; no text needs a third.
 */
export function foldCase(value: string): string {
  let folded = value;
  for (let pass = 0; pass < 3; pass++) {
    const again = folded.normalize("NFKC").toUpperCase().toLowerCase().normalize("NFKC");
    if (again === folded) break;
    folded = again;
  }
  return folded;
}

export function checkEmail(raw: string): EmailVerdict {
  // A lone surrogate cannot be normalised meaningfully: refuse it before anything else.
  if (!raw.isWellFormed()) return { ok: false, reason: "invisible_characters" };
  const trimmed = raw.trim();
  const normalized = trimmed.normalize("NFKC");
  if (FORBIDDEN.test(trimmed) || FORBIDDEN.test(normalized)) {
    return { ok: false, reason: "invisible_characters" };
  }
  const at = normalized.lastIndexOf("@");
  const local = normalized.slice(0, at);
  let domain = normalized.slice(at + 1).replace(IDEOGRAPHIC_DOTS, ".");
  if (at < 1 || local.length > MAX_LOCAL_LENGTH || local.includes("@")) {
    return { ok: false, reason: "not_an_address" };
  }
  if (ORPHAN_MARK.test(normalized) || BLANK_LETTERS.test(normalized)) {
    return { ok: false, reason: "invisible_characters" };
  }
  if (!LOCAL_PART.test(local) || !DOMAIN_PART.test(domain)) {
    return { ok: false, reason: "not_an_address" };
  }
  if (domain.endsWith(".")) domain = domain.slice(0, -1);
  const ascii = domainToASCII(domain);
  if (!HOST_NAME.test(ascii)) return { ok: false, reason: "not_an_address" };
  const email = `${local}@${ascii}`;
  if (email.length > MAX_EMAIL_LENGTH) return { ok: false, reason: "not_an_address" };
  return { ok: true, email, key: `${foldCase(local)}@${ascii}` };
}

/**
 * The key of the address a reader takes a normalised one for, its look-alike letters read as the
 * Latin ones they copy (`рау` in Cyrillic as `pay`); its own key when it has none. Read, folded,
 * and read again until nothing changes: once, a capital not in the list folded into a small
 * letter that is (`Ɪan`, U+A7AE, into `ɪan`) which nothing read again, and one fold leaves the
 * capital `ẞ` as `ß`, which a second makes `ss` (probe 91a F1, F2: `STRAẞE` beside `strasse`).
 * Folded before it is read, a listed capital whose small letter reads otherwise was lost (`Η`,
 * listed as `H`, folded to `η`, which reads `n`: probe 91d F1).
 */
export function readKey(email: string): string {
  const at = email.lastIndexOf("@");
  let read = email.slice(0, at);
  for (let pass = 0; pass < 4; pass++) {
    const again = foldCase(readAsLatin(read));
    if (again === read) break;
    read = again;
  }
  return `${read}${email.slice(at)}`;
}

/** The normalised address and its key, or null when it is not one. */
export function normalizeEmail(raw: string): NormalizedEmail | null {
  const verdict = checkEmail(raw);
  return verdict.ok ? { email: verdict.email, key: verdict.key } : null;
}

/**
 * What an account is found by for a string that may not be a valid address (a login with a typo):
 * its key when it is one, else the trimmed, case-folded text, which matches no account.
 */
export function emailLookupKey(raw: string): string {
  return normalizeEmail(raw)?.key ?? foldCase(raw.toWellFormed().trim());
}
