/**
 * @module
 * What the CLI prints comes partly from the database (key names and owners that clients chose,
 * ids and addresses, rows someone may have written into the file): a control character in it would
 * reach the operator's terminal as a command (clear the screen, recolour, rewrite the line above).
 * A line break in it would print a line of its own (a key listed as revoked above the real one).
 * So every `out`/`err` call prints one line, with its control characters spelt out (`\x1b`,
 * `\x0a`), tabs kept; a command with several lines calls once per line. The characters that break
 * a line or reorder it without being controls (U+2028, U+2029, the bidirectional marks, overrides
 * and isolates: a name ending in U+202E shows the rest of its row reversed) are spelt out too
 * (`\u202e`).
 */
import { reordersText } from "../logging/spell-out";

/** C0 controls but tab, DEL, and the C1 controls (8-bit ESC sequences, CSI among them). */
function isControl(code: number): boolean {
  return (code < 0x20 && code !== 0x09) || (code >= 0x7f && code <= 0x9f);
}

export function terminalSafe(line: string): string {
  let safe = "";
  let from = 0;
  for (let i = 0; i < line.length; i++) {
    const code = line.charCodeAt(i);
    if (isControl(code)) {
      safe += `${line.slice(from, i)}\\x${code.toString(16).padStart(2, "0")}`;
    } else if (code >= 0x061c && reordersText(code)) {
      safe += `${line.slice(from, i)}\\u${code.toString(16).padStart(4, "0")}`;
    } else continue;
    from = i + 1;
  }
  return from === 0 ? line : safe + line.slice(from);
}

/**
 * A value as JSON the terminal can take as it is (one line, or indented by `space`): JSON.stringify
 * leaves DEL and the C1 controls unescaped, which `terminalSafe` would spell `\x7f`, no JSON
 * escape, so one stored value made a `--json` line no parser reads (probe 82a F4). They are
 * written as JSON's `\u007f`.
 */
export function terminalJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(
    /[\x7f-\x9f]/g,
    (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
