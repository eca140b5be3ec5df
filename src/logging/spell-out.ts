/**
 * @module
 * Text read from the database file, as a log line or an audit event shows it: someone who can write
 * the file chooses it, so it is cut (a 1 MB id made a 1 MB line) and everything but printable ASCII
 * is spelt out as `\uXXXX` — control characters, and the Unicode that reorders or breaks a line for
 * whoever reads it (U+202E, U+2028). Ids Palisade writes itself are printable ASCII and show as they
 * are.
 */
const hex4 = (code: number) => code.toString(16).padStart(4, "0");

/**
 * `value` spelt out and cut to `max` characters. Whatever a forged row holds in place of text is
 * shown too, never thrown on: a blob as SQL's `x'…'` (a conversation id stored as one made the
 * export's tamper report throw, cutting every export of that user: probe 82g F1), NULL as `NULL`,
 * anything else as its text.
 */
export function spellOut(value: unknown, max = 64): string {
  if (value instanceof Uint8Array) {
    const hex = Buffer.from(value).toString("hex");
    return hex.length > max ? `x'${hex.slice(0, max)}...'` : `x'${hex}'`;
  }
  const text = value === null || value === undefined ? "NULL" : String(value);
  const spelt = text
    .slice(0, max)
    .replace(/[^\x20-\x7e]/g, (char) => `\\u${hex4(char.charCodeAt(0))}`);
  return text.length > max ? `${spelt}...` : spelt;
}

/**
 * The characters that break a line or reorder text without being control characters: Unicode's
 * line and paragraph separators, and the bidirectional marks, embeddings, overrides and isolates.
 * One list for the log's spelling here and the CLI's (cli/terminal).
 */
const REORDERING_RANGES: readonly (readonly [number, number])[] = [
  [0x061c, 0x061c],
  [0x200e, 0x200f],
  [0x2028, 0x202e],
  [0x2066, 0x2069],
];

/** Those characters as the inside of a regular expression's class (`\u061c\u200e-…`). */
export const REORDERING_CLASS = REORDERING_RANGES.map(([from, to]) =>
  from === to ? `\\u${hex4(from)}` : `\\u${hex4(from)}-\\u${hex4(to)}`,
).join("");

const REORDERING = new RegExp(`[${REORDERING_CLASS}]`, "g");

/** Whether a character (its UTF-16 code) breaks a line or reorders text. */
export function reordersText(code: number): boolean {
  return REORDERING_RANGES.some(([from, to]) => code >= from && code <= to);
}

/**
 * Longer text read from the file (a trigger's definition), cut at `max`: only the characters that
 * break or reorder a line are spelt out; control characters are left to the destination's own
 * escaping (JSON in the log, the CLI's terminal escaping), and other text is shown as it is.
 */
export function spellOutReordering(text: string, max: number): string {
  const spelt = text.slice(0, max).replace(REORDERING, (char) => `\\u${hex4(char.charCodeAt(0))}`);
  return text.length > max ? `${spelt}...` : spelt;
}
