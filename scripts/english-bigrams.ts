/**
 * Writes src/config/english-bigrams.ts: how likely each letter is at the start of an English word
 * and after each letter, learnt from zxcvbn's English word lists (common words, Wikipedia, first and
 * last names, the diceware list), a word weighted by 1/√(its rank + 10) so common words count more.
 * `secretWeakness` compares a value against it to tell written words from generated letters.
 * Run again only to change the model: `bun run scripts/english-bigrams.ts`.
 */
import * as common from "@zxcvbn-ts/language-common";
import * as english from "@zxcvbn-ts/language-en";

const LISTS = [
  "commonWords-en",
  "wikipedia-en",
  "firstnames-en",
  "lastnames-en",
  "diceware-common",
];
const dictionary = { ...english.dictionary, ...common.dictionary } as Record<string, string[]>;
// Row 0: the start of a word; row n: after the nth letter. Columns: the 26 letters.
const counts = Array.from({ length: 27 }, () => new Float64Array(26));
for (const name of LISTS) {
  const words = dictionary[name];
  if (!words) throw new Error(`zxcvbn has no list ${name}`);
  words.forEach((word, rank) => {
    const lower = word.toLowerCase();
    if (!/^[a-z]+$/.test(lower)) return;
    const weight = 1 / Math.sqrt(rank + 10);
    let row = 0;
    for (const letter of lower) {
      const column = letter.charCodeAt(0) - 97;
      counts[row]![column]! += weight;
      row = column + 1;
    }
  });
}
// A pair never seen keeps a small chance (1/2000 of its row), so one rare pair is not fatal.
const SMOOTHING = 0.0005;
const halfBits = counts.map((row) => {
  const total = row.reduce((sum, count) => sum + count, 0);
  return Array.from(row, (count) => {
    const chance = (count + total * SMOOTHING) / (total * (1 + 26 * SMOOTHING));
    return Math.round(-Math.log2(chance) * 2);
  });
});
const rows = halfBits.map((row) => `  ${row.join(", ")},`).join("\n");
await Bun.write(
  new URL("../src/config/english-bigrams.ts", import.meta.url),
  `/**
 * @module
 * Written by scripts/english-bigrams.ts from zxcvbn's English word lists; do not edit by hand.
 * \`ENGLISH_BIGRAMS[row * 26 + letter]\` is −log₂ of the chance of that letter (0 = a) at the start
 * of a word (row 0) or after the letter of row n (1 = a), in half bits.
 */
// biome-ignore format: one row of the table a line.
export const ENGLISH_BIGRAMS: readonly number[] = [
${rows}
];
`,
);
