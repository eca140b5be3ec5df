/**
 * @module
 * Whether a secret reads as something a person wrote rather than something a generator made
 * (probes 71a F2, 71d F2, 72b F1, F3, F4). A check for the shapes people write, not a strength
 * meter: l33t (`c0rr3ct`), names, acronyms and words of other languages run together pass it.
 */
import { ENGLISH_BIGRAMS } from "./english-bigrams";
import { ENGLISH_WORDS_TEXT } from "./english-words";

/**
 * Whether the value (as read: NFKC) reads as written:
 * - a fifth or more letters of a script without case (a Chinese, Japanese or Thai sentence);
 * - words and numbers between any punctuation (`Correct-Horse-Battery-Staple-42`,
 *   `john.smith@example.com:prod-2024`, `Das-ist-mein-Schlüssel`), `isWordsAndNumbers`;
 * - English words, run together or not (`correcthorsebatterystapleisgreat`,
 *   `Palisade-Production-JWTKey-2024`), `isMostlyEnglishWords`.
 */
export function readsAsWritten(text: string): boolean {
  const points = [...text];
  // No generator a deployment uses writes a letter of a script without case (`本番環境の…`), so a
  // fifth of them is writing, whatever Latin words and numbers stand beside it (probe 72b F4).
  const uncased = points.filter((point) => /\p{Lo}/u.test(point)).length;
  if (uncased * 5 >= points.length) return true;
  return isWordsAndNumbers(text, points.length) || isMostlyEnglishWords(text, points.length);
}

/** One piece between punctuation: letters, then digits if any (`v2`, `Summer2024`), or digits. */
const PIECE = /^(\p{L}*)(\p{N}*)$/u;
/** Letters as words are written: `word`, `Word`, `WORD`. */
const ONE_WORD = /^(?:\p{Lu}+|\p{Lu}?\p{Ll}+)$/u;
/** Capitalised words joined: `WordWord`, `wordWord`. */
const JOINED_WORDS = /^\p{Lu}?\p{Ll}+(?:\p{Lu}\p{Ll}+)+$/u;
/** Digits a number between punctuation may have (a date, `20241204`), and after a word (a year). */
const LONGEST_NUMBER = 8;
const LONGEST_SUFFIX = 4;
/** Letters past which a word must also read as one: a random part is often one case. */
const LONG_WORD = 8;
/** Letters past which a piece in one case is no word at all (a compound runs longer, rarely). */
const LONGEST_WORD = 15;

/**
 * Whether every piece between punctuation is a word or a number, three words of two letters or
 * more, their letters at least half the value, and the letters no less English than chance
 * (`englishEvidence` ≥ 0: random printable ASCII cut into short pieces is words by case), nor any
 * word of eight letters or more, and none longer than fifteen (a generated part in one case after a
 * label of words, probe 72b F1).
 */
function isWordsAndNumbers(text: string, length: number): boolean {
  if (englishEvidence(latinWords(text)) < 0) return false;
  let words = 0;
  let letters = 0;
  for (const piece of text.split(/[^\p{L}\p{N}]+/u)) {
    if (piece === "") continue;
    const shaped = PIECE.exec(piece);
    if (shaped === null) {
      // Words and numbers glued (`Summer2024Winter2025`): only common words count, since random
      // letters and digits alternate so too.
      const glued = commonWordsBetweenNumbers(piece);
      if (glued === null) return false;
      words += glued.words;
      letters += glued.letters;
      continue;
    }
    const [, word = "", digits = ""] = shaped;
    // A number is a year, a date or a version (`2024`, `20241204`, `v2`); longer runs of digits are
    // a generated part (`debc09579701` ends a UUID).
    if (digits.length > (word === "" ? LONGEST_NUMBER : LONGEST_SUFFIX)) return false;
    if (word === "") continue;
    const wordLength = [...word].length;
    if (wordLength >= LONG_WORD && englishEvidence(latinWords(word)) < 0) return false;
    if (ONE_WORD.test(word)) {
      // Longer than words are: a generated part in one case (`…-key-ASSASSTIOHYRCAUZBUKURAB…`).
      if (wordLength > LONGEST_WORD) return false;
      // A letter alone is a word too (`a`, `I`), but random punctuation leaves many of them.
      if (wordLength < 2) continue;
      words++;
    } else if (
      JOINED_WORDS.test(word) &&
      englishEvidence(latinWords(word)) >= 0 &&
      // Random letters glued to a label (`PalisadeProductionKeympbadlx…`) are no word.
      latinWords(word).every((part) => part.length <= LONGEST_WORD)
    ) {
      words += word.match(/\p{Lu}/gu)?.length ?? 0;
      if (/^\p{Ll}/u.test(word)) words++;
    } else {
      return false;
    }
    letters += wordLength;
  }
  return words >= 3 && letters * 2 >= length;
}

/**
 * The common words (`COMMON_WORDS`, capitals splitting them) and their letters in a piece of
 * letters and digits alternating, when every group of letters is such words; null otherwise.
 */
function commonWordsBetweenNumbers(piece: string): { words: number; letters: number } | null {
  let words = 0;
  let letters = 0;
  for (const group of piece.match(/\p{L}+/gu) ?? []) {
    const parts = latinWords(group);
    if (parts.join("").length !== group.length) return null;
    if (!parts.every((part) => COMMON_WORDS.has(part))) return null;
    words += parts.length;
    letters += group.length;
  }
  return { words, letters };
}

const COMMON_WORDS: ReadonlySet<string> = new Set(ENGLISH_WORDS_TEXT.split(/\s+/).filter(Boolean));
const LONGEST_COMMON_WORD = Math.max(...[...COMMON_WORDS].map((word) => word.length));
/** Of the value's Latin letters, the share the common words must cover. */
const COVERED_SHARE = 0.7;
/** Letters in a row no common word covers past which a part is not words (a generated part). */
const LONGEST_UNCOVERED = 5;
/** Letters of a run from which it must be mostly words itself, not only with the rest. */
const OWN_RUN = 12;
/** Characters of a piece between punctuation from which two thirds of it must be words. */
const OWN_PIECE = 8;

/**
 * Whether the value's Latin letters are mostly common English words of three letters or more
 * (`ENGLISH_WORDS_TEXT`), found in each run of letters as the most letters a sequence of such
 * words covers: at least 70 % of the letters and half of the value covered, no more than five
 * letters in a row uncovered, and no piece between punctuation of eight characters or more that
 * is not two thirds words itself (a generated part after a label of words: 32 hex digits, a UUID,
 * base64; probe 72c A1 refused a fifth of those with hex or a UUID). Generated values: see the config
 * test's shapes; written phrases cover 0.72 to 1 of their letters.
 */
function isMostlyEnglishWords(text: string, length: number): boolean {
  let letters = 0;
  let covered = 0;
  for (const piece of text.split(/[^\p{L}\p{N}]+/u)) {
    let pieceCovered = 0;
    for (const run of latinWords(piece)) {
      const cover = commonWordsCover(run);
      if (cover.longestUncovered > LONGEST_UNCOVERED) return false;
      // A run of its own that is not mostly words is a generated part beside a label of them.
      if (run.length >= OWN_RUN && cover.letters < run.length * COVERED_SHARE) return false;
      letters += run.length;
      pieceCovered += cover.letters;
    }
    if (piece.length >= OWN_PIECE && pieceCovered * 3 < piece.length * 2) return false;
    covered += pieceCovered;
  }
  return covered * 2 >= length && covered >= letters * COVERED_SHARE;
}

/** The most letters of `run` common words cover, and the longest stretch then left uncovered. */
function commonWordsCover(run: string): { letters: number; longestUncovered: number } {
  // best[i]: the most letters of run[0, i) covered; word[i]: the length of the word ending at i in
  // that cover, 0 for a letter left uncovered.
  const best = new Array<number>(run.length + 1).fill(0);
  const word = new Array<number>(run.length + 1).fill(0);
  for (let end = 1; end <= run.length; end++) {
    best[end] = best[end - 1]!;
    for (let size = 3; size <= Math.min(LONGEST_COMMON_WORD, end); size++) {
      if (best[end - size]! + size > best[end]! && COMMON_WORDS.has(run.slice(end - size, end))) {
        best[end] = best[end - size]! + size;
        word[end] = size;
      }
    }
  }
  let stretch = 0;
  let longestUncovered = 0;
  for (let end = run.length; end > 0; ) {
    if (word[end]! > 0) {
      stretch = 0;
      end -= word[end]!;
    } else {
      stretch++;
      longestUncovered = Math.max(longestUncovered, stretch);
      end--;
    }
  }
  return { letters: best[run.length]!, longestUncovered };
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
