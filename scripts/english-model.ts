/**
 * Writes the two English models `secretWeakness` tells written words from generated letters by,
 * both from zxcvbn's English word lists:
 * - src/config/english-bigrams.ts: how likely each letter is at the start of a word and after each
 *   letter (common words, Wikipedia, first and last names, the diceware list; a word weighted by
 *   1/√(its rank + 10) so common words count more);
 * - src/config/english-words.ts: the 5,000 most common words of three letters or more.
 * Run again only to change a model: `bun run scripts/english-model.ts`.
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
 * Written by scripts/english-model.ts from zxcvbn's English word lists; do not edit by hand.
 * \`ENGLISH_BIGRAMS[row * 26 + letter]\` is −log₂ of the chance of that letter (0 = a) at the start
 * of a word (row 0) or after the letter of row n (1 = a), in half bits.
 */
// biome-ignore format: one row of the table a line.
export const ENGLISH_BIGRAMS: readonly number[] = [
${rows}
];
`,
);

/** Enough to read run-together phrases; more made random letters read as words (measured). */
const COMMON_WORDS = 5_000;
const commonWords = (dictionary["commonWords-en"] ?? [])
  .filter((word) => /^[a-z]{3,}$/.test(word))
  .slice(0, COMMON_WORDS);
if (commonWords.length !== COMMON_WORDS)
  throw new Error("zxcvbn's common words are fewer than expected");
const lines: string[] = [];
let line = "";
for (const word of commonWords) {
  if (line.length + word.length + 1 > 96) {
    lines.push(line);
    line = "";
  }
  line = line === "" ? word : `${line} ${word}`;
}
lines.push(line);
await Bun.write(
  new URL("../src/config/english-words.ts", import.meta.url),
  `/**
 * @module
 * Written by scripts/english-model.ts from zxcvbn's English common words; do not edit by hand.
 * The ${COMMON_WORDS.toLocaleString("en")} most common English words of three letters or more, most common first, in lower case.
 */
export const ENGLISH_WORDS_TEXT = \`
${lines.join("\n")}
\`;
`,
);
