/**
 * @module
 * The characters that draw nothing themselves yet shape the visible text they stand in: the
 * zero-width joiner of an emoji sequence (`👨‍👩‍👧`), the joiner and non-joiner inside a word of a
 * script whose letters join or stack (Persian, Sinhala, the Indic scripts), a variation selector
 * after a character that has variation sequences (`❤️`, a keycap `1️⃣`, a CJK ideograph, a
 * mathematical symbol), a Mongolian free variation selector after a Mongolian letter, and the tag
 * characters of a subdivision flag (`🏴󠁧󠁢󠁳󠁣󠁴󠁿`). Anywhere else (between Latin letters, on their own, a run of
 * sixty) they shape nothing and only make two texts that look alike differ (probe 40b F4): the
 * rules that refuse what draws nothing (a key's name, a payment's metadata key) take these out
 * where they shape and refuse what is left.
 */

/** A subdivision flag: the black flag, tag characters, the cancel tag (UTS #51 tag sequence). */
const TAG_SEQUENCE = /\u{1F3F4}[\u{E0020}-\u{E007E}]+\u{E007F}/gu;
/** A keycap: `0`–`9`, `#` or `*`, the emoji presentation selector, the enclosing keycap. */
const KEYCAP = /(?<=[0-9#*])\uFE0F(?=\u20E3)/gu;
/**
 * A variation selector 1–16 after a character outside ASCII that has variation sequences: an
 * emoji (text or emoji presentation), a symbol, an ideograph or another letter of a script with
 * standardized variants (CJK compatibility, Myanmar, Phags-pa, Manichaean).
 */
const VARIATION = /(?<=(?![\0-\x7F])[\p{Emoji}\p{Sm}\p{So}\p{Lo}])[\uFE00-\uFE0F]/gu;
/** An ideographic variation selector (17–256) after a CJK ideograph (the IVD's sequences). */
const IDEOGRAPHIC_VARIATION = /(?<=\p{Ideographic})[\u{E0100}-\u{E01EF}]/gu;
/** A Mongolian free variation selector (and the vowel separator's neighbour) after its letter. */
const MONGOLIAN_VARIATION = /(?<=\p{scx=Mongolian})[\u180B-\u180D\u180F]/gu;
/** The joiner between two emoji of a ZWJ sequence, the first with its skin tone if it has one. */
const EMOJI_JOINER =
  /(?<=\p{Extended_Pictographic}[\u{1F3FB}-\u{1F3FF}]?)\u200D(?=\p{Extended_Pictographic})/gu;
/**
 * The joiner or non-joiner between two letters or marks of a script that joins or stacks them:
 * Arabic (Persian's non-joiner), Syriac, N'Ko, Mongolian, Thaana, the Indic scripts, Sinhala,
 * Myanmar, Khmer and Tibetan.
 */
const JOINING =
  "\\p{scx=Arab}\\p{scx=Syrc}\\p{scx=Nkoo}\\p{scx=Mong}\\p{scx=Thaa}\\p{scx=Deva}\\p{scx=Beng}\\p{scx=Guru}\\p{scx=Gujr}\\p{scx=Orya}\\p{scx=Taml}\\p{scx=Telu}\\p{scx=Knda}\\p{scx=Mlym}\\p{scx=Sinh}\\p{scx=Mymr}\\p{scx=Khmr}\\p{scx=Tibt}";
const SCRIPT_JOINER = new RegExp(`(?<=[${JOINING}])[\\u200C\\u200D](?=[${JOINING}])`, "gu");

/**
 * The text with every joiner, variation selector and tag that shapes what it stands in taken out
 * (a flag's tags with their cancel tag, the black flag kept); those left shape nothing. For a
 * check only: what is stored is the text as sent.
 */
export function withoutShapingCharacters(text: string): string {
  return text
    .replace(TAG_SEQUENCE, "\u{1F3F4}")
    .replace(KEYCAP, "")
    .replace(VARIATION, "")
    .replace(IDEOGRAPHIC_VARIATION, "")
    .replace(MONGOLIAN_VARIATION, "")
    .replace(EMOJI_JOINER, "")
    .replace(SCRIPT_JOINER, "");
}
