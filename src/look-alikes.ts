/**
 * @module
 * A text as a reader takes it in: NFKC (fullwidth, mathematical letters, ligatures folded), what
 * draws nothing dropped (zero-width spaces and joiners, soft hyphens, variation selectors, tags,
 * blank letters), and letters that only look Latin read as the Latin letter they look like. An
 * attacker undoes each of these as cheaply as NFKC: the password policy judges a password this way
 * and the scrubber looks for a secret in a name or reason this way (probes 39b F2, F6; 40b F1, F2).
 */

import { CONFUSABLE_TEXT } from "./confusables";

/** What draws nothing. */
const UNSEEN = /[\p{Default_Ignorable_Code_Point}\p{Cf}\u2800\uFFFC\u{18CFF}\u{1D159}]/gu;

/**
 * Letters read as the Latin letter they look like: every letter and digit UTS #39's confusables
 * list maps to a prototype an address may hold (src/confusables.ts, Unicode 10's list: `ç` and
 * Cyrillic `ҫ` both as `c̦`), and over it a
 * hand-made list of the scripts and forms a keyboard or an IME types: Cyrillic, Greek, Armenian,
 * Coptic, Cherokee and Lisu letters that copy Latin ones, small capitals, and the strokes and
 * circles of Han, Bopomofo, katakana and Hangul that a Latin address may hold beside its letters
 * (an address may mix Latin with those scripts: modules/auth/mixed-scripts.ts). Letters of newer
 * scripts, and shapes Unicode's list does not name, are not read.
 */
const HAND_READINGS: Readonly<Record<string, string>> = {
  // Cyrillic
  а: "a",
  в: "b",
  е: "e",
  з: "3",
  і: "i",
  ј: "j",
  к: "k",
  м: "m",
  н: "h",
  о: "o",
  п: "n",
  р: "p",
  с: "c",
  т: "t",
  у: "y",
  х: "x",
  ѕ: "s",
  ԁ: "d",
  ԛ: "q",
  ԝ: "w",
  һ: "h",
  ӏ: "l",
  ь: "b",
  г: "r",
  ү: "y",
  А: "A",
  В: "B",
  Е: "E",
  З: "3",
  І: "I",
  Ј: "J",
  К: "K",
  М: "M",
  Н: "H",
  О: "O",
  Р: "P",
  С: "C",
  Т: "T",
  У: "Y",
  Х: "X",
  Ѕ: "S",
  Ү: "Y",
  Ԁ: "D",
  Ԛ: "Q",
  Ԝ: "W",
  Һ: "H",
  Ӏ: "I",
  ѵ: "v",
  ҽ: "e",
  Ҽ: "E",
  Ѵ: "V",
  Ԍ: "G",
  // Greek
  α: "a",
  β: "b",
  γ: "y",
  ε: "e",
  ι: "i",
  κ: "k",
  ν: "v",
  ο: "o",
  ρ: "p",
  τ: "t",
  υ: "u",
  χ: "x",
  ω: "w",
  Α: "A",
  Β: "B",
  Ε: "E",
  Ζ: "Z",
  Η: "H",
  Ι: "I",
  Κ: "K",
  Μ: "M",
  Ν: "N",
  Ο: "O",
  Ρ: "P",
  Τ: "T",
  Υ: "Y",
  Χ: "X",
  η: "n",
  ϳ: "j",
  Ϳ: "J",
  ϲ: "c",
  Ϲ: "C",
  // Coptic (probe 90h F1: `ⲣⲁⲩ` read as itself beside `pay`)
  Ⲁ: "A",
  ⲁ: "a",
  Ⲃ: "B",
  ⲅ: "r",
  Ⲉ: "E",
  ⲉ: "e",
  Ⲍ: "Z",
  ⲍ: "z",
  Ⲏ: "H",
  ⲏ: "h",
  Ⲓ: "I",
  ⲓ: "i",
  Ⲕ: "K",
  ⲕ: "k",
  Ⲙ: "M",
  ⲙ: "m",
  Ⲛ: "N",
  ⲛ: "n",
  Ⲟ: "O",
  ⲟ: "o",
  Ⲣ: "P",
  ⲣ: "p",
  Ⲥ: "C",
  ⲥ: "c",
  Ⲧ: "T",
  ⲧ: "t",
  Ⲩ: "Y",
  ⲩ: "y",
  Ⲭ: "X",
  ⲭ: "x",
  Ⲱ: "W",
  ⲱ: "w",
  // Armenian
  օ: "o",
  ս: "u",
  լ: "l",
  ո: "n",
  հ: "h",
  զ: "q",
  ց: "g",
  ա: "w",
  Տ: "S",
  Օ: "O",
  Ս: "U",
  // Cherokee
  Ꭺ: "A",
  Ᏼ: "B",
  Ꮯ: "C",
  Ꭰ: "D",
  Ꭼ: "E",
  Ꮐ: "G",
  Ꮋ: "H",
  Ꭻ: "J",
  Ꮶ: "K",
  Ꮮ: "L",
  Ꮇ: "M",
  Ꮲ: "P",
  Ꮪ: "S",
  Ꭲ: "T",
  Ꮩ: "V",
  Ꮃ: "W",
  Ꮓ: "Z",
  // Lisu
  ꓐ: "B",
  ꓑ: "P",
  ꓒ: "d",
  ꓓ: "D",
  ꓔ: "T",
  ꓖ: "G",
  ꓗ: "K",
  ꓙ: "J",
  ꓚ: "C",
  ꓜ: "Z",
  ꓝ: "F",
  ꓟ: "M",
  ꓠ: "N",
  ꓡ: "L",
  ꓢ: "S",
  ꓣ: "R",
  ꓦ: "V",
  ꓧ: "H",
  ꓪ: "W",
  ꓫ: "X",
  ꓬ: "Y",
  ꓮ: "A",
  ꓰ: "E",
  ꓲ: "I",
  ꓳ: "O",
  ꓴ: "U",
  // Small capitals and other Latin letters drawn as a plain one
  ᴀ: "a",
  ʙ: "b",
  ᴄ: "c",
  ᴅ: "d",
  ᴇ: "e",
  ꜰ: "f",
  ɢ: "g",
  ʜ: "h",
  ɪ: "i",
  ᴊ: "j",
  ᴋ: "k",
  ʟ: "l",
  ᴍ: "m",
  ɴ: "n",
  ᴏ: "o",
  ᴘ: "p",
  ǫ: "q",
  ʀ: "r",
  ꜱ: "s",
  ᴛ: "t",
  ᴜ: "u",
  ᴠ: "v",
  ᴡ: "w",
  ʏ: "y",
  ᴢ: "z",
  ı: "i",
  ȷ: "j",
  ɑ: "a",
  ɡ: "g",
  ɩ: "i",
  ʋ: "u",
  ǀ: "l",
  // Letters drawn as ASCII punctuation, which a local part may hold (probe 91a F6: `o'brien`
  // beside `oʼbrien`, `john_smith` beside `johnˍsmith`)
  ʼ: "'",
  ʹ: "'",
  ˈ: "'",
  ʻ: "'",
  ʽ: "'",
  ˋ: "`",
  ˍ: "_",
  ǃ: "!",
  ʔ: "?",
  ـ: "_",
  // Han's and Hangul's strokes and circles, which a Latin address may hold beside its letters
  // (probes 90j F2, 90m F1: `paypa丨`, `g〇〇gle`, `john一smith`)
  丨: "l",
  〡: "l",
  〇: "o",
  一: "-",
  ー: "-",
  // Hangul's compatibility letters are these after NFKC
  ᅵ: "l",
  ᅳ: "-",
  ᄋ: "o",
  ᆼ: "o",
  ᄂ: "L",
  ᄃ: "c",
  ᅮ: "T",
  ᅡ: "t",
  // More of Han's, Bopomofo's and katakana's (probe 90n F6)
  ㄧ: "-",
  ㄥ: "L",
  乚: "L",
  〢: "ll",
  亅: "j",
  口: "o",
  ロ: "o",
  匚: "c",
  ㄈ: "c",
  凵: "u",
  ㄩ: "u",
  乂: "x",
  ㄨ: "x",
  〤: "x",
  丁: "T",
  ㄒ: "T",
  丫: "Y",
  ㄚ: "Y",
  エ: "I",
  工: "I",
  卜: "t",
};

/** Unicode's own list (scripts/confusables.ts), the hand-made readings over it. */
const lookAlikeList = (): Record<string, string> =>
  readToTheEnd(withCherokeeSmallLetters({ ...confusableAscii(), ...HAND_READINGS }));

/**
 * The list, built at its first use: ~2,000 readings each read on to its end took 10–20 ms of every
 * start and CLI command (probe 91j F3).
 */
let builtList: Readonly<Record<string, string>> | null = null;
const looksLatin = (): Readonly<Record<string, string>> => (builtList ??= lookAlikeList());

/** The letters and digits Unicode's confusables list draws as another (src/confusables.ts). */
function confusableAscii(): Record<string, string> {
  const list: Record<string, string> = {};
  for (const entry of CONFUSABLE_TEXT.split(/[ \n]/)) {
    const [character, ...drawn] = entry;
    if (character !== undefined) list[character] = drawn.join("");
  }
  return list;
}

/**
 * Each reading read again until it reads as itself: Unicode draws Cherokee `ꮲ` as the small
 * capital `ᴘ`, which reads `p`; read once, `ꮲꭺssword1234` was a password the policy no longer
 * knew (probe 91i F1). At most four times, so that no loop in the list runs on.
 */
function readToTheEnd(list: Record<string, string>): Record<string, string> {
  for (const [letter, first] of Object.entries(list)) {
    let reading = first;
    for (let pass = 0; pass < 4; pass++) {
      // Taken apart first, as a text is read (`ҋ` is drawn as `й̦`, whose `и` is listed: 91j F4).
      const again = [...reading.normalize("NFD")]
        .map((c) => (c === letter ? c : (list[c] ?? c)))
        .join("");
      if (again === reading) break;
      reading = again;
    }
    list[letter] = reading;
  }
  return list;
}

/**
 * The list with Cherokee's small letters beside its capitals, read as the small Latin letters:
 * they are the capitals' lower case (U+AB70…), drawn as small capitals, and case folding turns a
 * capital into one (probe 90h F1).
 */
function withCherokeeSmallLetters(list: Record<string, string>): Record<string, string> {
  for (const [letter, latin] of Object.entries(list)) {
    const small = letter.toLowerCase();
    if (small !== letter && /\p{Script=Cherokee}/u.test(letter))
      list[small] ??= latin.toLowerCase();
  }
  return list;
}

const MARK = /^\p{M}$/u;
/** A dot above on a letter that has a dot (i, j, Cyrillic і, ј): drawn as that dot. */
const DOT_ON_DOTTED = /(\p{Soft_Dotted})\u0307/gu;

/**
 * Raised by a change in how readAsLatin or seenCharacters read a text other than the list's
 * entries (which are versioned by themselves), or in what a stored reading is taken of: a stored
 * reading's version is taken of both (readingRulesText; modules/auth/readings.ts). 7: a row stored
 * before normalisation is read by its normalised address (probe 94a F1). 8: stored text is read to
 * 1,016 characters, not 254 (94d F3; 94e F1: a release that gave a padded address no reading left
 * it so, the version being the same).
 */
const READING_CODE_REVISION = 8;

/**
 * The reading's rules as text: Unicode's list and the hand-made one it is built from, and the
 * revision of the code that builds and applies it. What a stored reading's version is taken of, so that a release that reads a
 * text otherwise finds the readings stored by an older one out of date.
 */
export function readingRulesText(): string {
  // What the list is built from, not the list: built for the version, it was built at every start.
  return JSON.stringify([
    READING_CODE_REVISION,
    UNSEEN.source,
    CONFUSABLE_TEXT,
    Object.entries(HAND_READINGS),
  ]);
}

/** Each letter in the list and its reading, as the list is built (for its tests). */
export function lookAlikeReadings(): [string, string][] {
  return Object.entries(looksLatin());
}

/** The text without what draws nothing, spelt as it is otherwise. */
export function withoutUnseen(text: string): string {
  return text.replace(UNSEEN, "");
}

/** NFKC, with what draws nothing dropped: the characters a reader sees, as they are. */
export function seenCharacters(text: string): string {
  return withoutUnseen(text.normalize("NFKC"));
}

/**
 * The text as a reader takes it in (see the module's header). A letter with marks not in the list
 * (Cyrillic `ӓ`, Greek `ό`) is read as its base letter's reading with the same marks (`ä`, `ó`):
 * `һӓскег` read as itself beside `häcker` (probe 90j F2). Reading any text otherwise than the
 * list says: raise READING_CODE_REVISION.
 */
export function readAsLatin(text: string): string {
  let read = "";
  let marked = false;
  for (const character of seenCharacters(text)) {
    const list = looksLatin();
    const listed = list[character];
    if (listed !== undefined) {
      // Its own entry first: a letter with marks the hand-made list names whole.
      read += listed;
      marked = true;
      continue;
    }
    const [base, ...marks] = character.normalize("NFD");
    // Marks only: a Hangul syllable decomposes into letters (이 into ᄋ and ᅵ), read as itself.
    if (marks.length > 0 && base !== undefined && marks.every((mark) => MARK.test(mark))) {
      // Its base letter's reading with its marks, each mark read too (`ӓ` as `ä`, probe 90j F2;
      // `ş` as `ș`, a cedilla read as a comma below, 91h F2).
      const seen = (list[base] ?? base) + marks.map((mark) => list[mark] ?? mark).join("");
      if (seen !== base + marks.join("")) {
        read += seen;
        marked = true;
        continue;
      }
    }
    read += character;
  }
  // `ѕкі̇` (a Cyrillic і with a combining dot above) is drawn as `ski`: Latin's `i̇` is refused in
  // an address, the Cyrillic one was read as it and not as `i` (probe 91a F3).
  const dotted = read.replace(DOT_ON_DOTTED, "$1");
  return marked ? dotted.normalize("NFC") : dotted;
}
