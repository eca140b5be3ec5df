/**
 * @module
 * Whether a text shows anything: the rule a chat message (`POST /api/chat`, a WhatsApp message)
 * and an API key's name must meet, so that neither is made of characters that draw nothing.
 */

/**
 * A character that shows something: not white space or a separator, not a format character
 * (zero-width space and joiners, bidi marks), not default-ignorable (the Hangul fillers U+115F,
 * U+1160, U+3164, U+FFA0; variation selectors), not a combining mark (on nothing it draws a stray
 * accent at most; `e` + U+0301 still has its `e`), not private-use, unassigned or a noncharacter
 * (no font a reader has draws it), not U+FFFD (what a broken encoding leaves) nor U+FFFC (the
 * placeholder for an object that is not there), and not the blank
 * letters and symbols Unicode has no property for: the blank Braille pattern U+2800, the Khitan
 * blank U+18CFF and the null notehead U+1D159 (probe 38a F7).
 */
const DRAWS_NOTHING =
  "\\s\\p{Z}\\p{Cc}\\p{Cf}\\p{M}\\p{Co}\\p{Cn}\\p{Default_Ignorable_Code_Point}\\u2800\\uFFFC\\uFFFD\\u{18CFF}\\u{1D159}";
const SHOWS = new RegExp(`[^${DRAWS_NOTHING}]`, "u");
const SHOWS_NOTHING = new RegExp(`[${DRAWS_NOTHING}]`, "gu");

export function showsSomething(text: string): boolean {
  return SHOWS.test(text);
}

/** `text` with every character that shows nothing left out. */
export function visiblePart(text: string): string {
  return text.replace(SHOWS_NOTHING, "");
}

/**
 * Whether a text holds a control character (Unicode's Cc: C0, DEL, C1) other than tab and newline:
 * what a chat message and a payment's description and metadata values refuse.
 */
export function hasControlBesidesTabAndNewline(text: string): boolean {
  return CONTROL_BUT_TAB_AND_NEWLINE.test(text);
}

const CONTROL_BUT_TAB_AND_NEWLINE = /[^\P{Cc}\t\n]/u;
