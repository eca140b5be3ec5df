/**
 * @module
 * Text read from the database file, as a log line or an audit event shows it: someone who can write
 * the file chooses it, so it is cut (a 1 MB id made a 1 MB line) and everything but printable ASCII
 * is spelt out as `\uXXXX` — control characters, and the Unicode that reorders or breaks a line for
 * whoever reads it (U+202E, U+2028). Ids Palisade writes itself are printable ASCII and show as they
 * are.
 */
export function spellOut(text: string, max = 64): string {
  const spelt = text
    .slice(0, max)
    .replace(/[^\x20-\x7e]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return text.length > max ? `${spelt}...` : spelt;
}

/**
 * The characters that break a line or reorder text without being control characters: Unicode's
 * line and paragraph separators, and the bidirectional marks, embeddings, overrides and isolates.
 */
const REORDERING = /[\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

/**
 * Longer text read from the file (a trigger's definition), cut at `max`: only the characters that
 * break or reorder a line are spelt out; control characters are left to the destination's own
 * escaping (JSON in the log, the CLI's terminal escaping), and other text is shown as it is.
 */
export function spellOutReordering(text: string, max: number): string {
  const spelt = text
    .slice(0, max)
    .replace(REORDERING, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return text.length > max ? `${spelt}...` : spelt;
}
