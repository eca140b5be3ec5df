/**
 * @module
 * The characters that draw nothing themselves yet shape the visible text they stand in: the
 * zero-width joiner of an emoji sequence (`👨‍👩‍👧`), the joiner and non-joiner inside a word of a
 * script whose letters join or stack (Persian, Sinhala, the Indic and other Brahmic scripts), a
 * variation selector after a character that has variation sequences (`❤️`, a keycap `1️⃣`, a CJK
 * ideograph, a mathematical symbol), a Mongolian variation selector after a Mongolian letter, and
 * the tag characters of a subdivision flag (`🏴󠁧󠁢󠁳󠁣󠁴󠁿`). Anywhere else (between Latin letters, on their
 * own, a run of sixty, tags spelling a sentence inside a flag) they shape nothing and only make two
 * texts that look alike differ, or hide text (probes 40b F4, 41a F1): the rules that refuse what
 * draws nothing (a key's name, a payment's metadata key) take these out where they shape and
 * refuse what is left.
 */

/**
 * Scripts whose letters join or stack, where a joiner or non-joiner between two of its letters or
 * marks chooses a form: the cursive scripts (Arabic, Syriac, N'Ko, Mongolian, Mandaic, Adlam, Hanifi
 * Rohingya…) and those with a virama (Devanagari to Sinhala, Myanmar, Khmer, Tibetan, Javanese,
 * Balinese, Tai Tham…). By Script, not Script_Extensions: shared punctuation (the danda, the Arabic
 * comma, U+202F) and Latin combining marks belong to none of them.
 */
const JOINING_SCRIPTS = [
  "Arab Syrc Nkoo Mong Thaa Mand Mani Phlp Sogd Chrs Adlm Rohg Ougr",
  "Deva Beng Guru Gujr Orya Taml Telu Knda Mlym Sinh Mymr Khmr Tibt Java Bali Lana Sund",
  "Tirh Gran Shrd Sidd Modi Takr Khoj Sind Mahj Newa Bhks Dogr Gonm Gong Ahom Cakm Kthi Mtei",
  "Lepc Limb Tale Talu Tavt Cham Kali Rjng Batk Bugi Tglg Hano Buhd Tagb Saur Sylo Brah Phag",
  "Zanb Soyo Diak Kawi Nand",
]
  .join(" ")
  .split(" ")
  .map((script) => `\\p{sc=${script}}`)
  .join("");
/**
 * A letter or mark of a joining script, with the marks on it (an Arabic harakah or shadda is
 * Inherited, not Arabic: `حقّ‌ها`, probe 41c F2).
 */
const JOINING_LETTER = `[[\\p{L}\\p{M}]&&[${JOINING_SCRIPTS}]]\\p{M}*`;
/** The viramas a word-final joiner follows (Malayalam's chillu, and its kin in the Indic scripts). */
const VIRAMA = "[\\u094D\\u09CD\\u0A4D\\u0ACD\\u0B4D\\u0BCD\\u0C4D\\u0CCD\\u0D4D\\u0DCA]";

/**
 * Where each of these characters shapes something, one alternative each, all matched against the
 * text as written (one pass: a selector taken out must not make the next one look placed):
 */
const SHAPING = new RegExp(
  [
    // a subdivision flag's tags: the black flag, a region's two letters and up to three letters or
    // digits of its subdivision (`gbsct`), the cancel tag (UTS #51); any other payload is text
    // hidden in tags;
    "(?<=\\u{1F3F4})[\\u{E0061}-\\u{E007A}]{2}[\\u{E0030}-\\u{E0039}\\u{E0061}-\\u{E007A}]{1,3}\\u{E007F}",
    // a keycap: `0`–`9`, `#` or `*`, the emoji presentation selector, the enclosing keycap;
    "(?<=[0-9#*])\\uFE0F(?=\\u20E3)",
    // the text or emoji presentation selector after a pictograph (not after a skin tone or a
    // regional indicator, which have no variants);
    "(?<=\\p{Extended_Pictographic})[\\uFE0E\\uFE0F]",
    // a standardized variant (StandardizedVariants.txt): after a CJK ideograph, a mathematical
    // symbol outside ASCII or a letterlike or mathematical letter (chancery and roundhand `ℬ︀`), a
    // letter of Myanmar, Phags-pa, Manichaean or Egyptian hieroglyphs, the CJK comma and full stop
    // and their fullwidth kin, the curly quotes, the digit zero;
    "(?<=\\p{sc=Han}|(?![\\0-\\x7F])\\p{Sm}|[\\u2100-\\u214F\\u{1D400}-\\u{1D7FF}]|[[\\p{L}\\p{M}]&&[\\p{sc=Mymr}\\p{sc=Phag}\\p{sc=Mani}\\p{sc=Egyp}]]|[\\u3001\\u3002\\uFF01\\uFF0C\\uFF0E\\uFF1A\\uFF1B\\uFF1F\\u2018\\u2019\\u201C\\u201D0])[\\uFE00-\\uFE0D]",
    // an ideographic variation selector after a CJK ideograph (the IVD's sequences);
    "(?<=\\p{sc=Han})[\\u{E0100}-\\u{E01EF}]",
    // a Mongolian free variation selector after a Mongolian letter (not after another selector:
    // they are Mongolian too, probe 41c F1), its vowel separator between two letters;
    "(?<=[\\p{L}&&\\p{sc=Mong}])[\\u180B-\\u180D\\u180F]",
    "(?<=[\\p{L}&&\\p{sc=Mong}])\\u180E(?=[\\p{L}&&\\p{sc=Mong}])",
    // the joiner between two emoji of a ZWJ sequence, the first with its skin tone or presentation
    // selector if it has one;
    "(?<=\\p{Extended_Pictographic}[\\uFE0F\\u{1F3FB}-\\u{1F3FF}]?)\\u200D(?=\\p{Extended_Pictographic})",
    // the joiner or non-joiner between two letters or marks of a joining script, and the joiner
    // after a virama at a word's end (Malayalam's chillu as written before Unicode 5.1).
    `(?<=${JOINING_LETTER})[\\u200C\\u200D](?=${JOINING_LETTER})`,
    `(?<=${VIRAMA})\\u200D(?![\\p{L}\\p{M}])`,
  ].join("|"),
  "gv",
);

/**
 * The text with every joiner, variation selector and tag that shapes what it stands in taken out
 * (a flag's tags with their cancel tag, the black flag kept); those left shape nothing. For a
 * check only: what is stored is the text as sent.
 */
export function withoutShapingCharacters(text: string): string {
  return text.replace(SHAPING, "");
}
