/**
 * @module
 * Cuts a JSON log line to fit one indivisible write. The kernel writes at most PIPE_BUF bytes to a
 * pipe in one piece; a longer write from one process can be split by another's, and both lines are
 * then broken JSON for whatever reads the pipe. Several processes can share one stdout pipe (the
 * scale-out's processes under one supervisor), so an event line that would pass the limit (an error
 * with a long stack and its causes) is cut to fit: its longest strings are shortened, each ending in
 * `…`, until it does, and the line says `"truncated":true`. What a line keeps, in order of cost to
 * the reader: every field, then the start of every string. The full error still goes to Sentry.
 *
 * The line given is already scrubbed, and a cut string is a prefix of a scrubbed one, so cutting
 * can reveal nothing the line did not show.
 */

const CUT = "…";
/** Strings shorter than this are left whole: past that point the line has too many fields. */
const SHORTEST_CUT = 32;
const MAX_ROUNDS = 64;

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

interface Slot {
  holder: Json[] | { [key: string]: Json };
  key: string | number;
  length: number;
}

/** The longest string in the record (a value, never a key), where it is held. */
function longestString(value: Json, found: Slot | null = null): Slot | null {
  if (value === null || typeof value !== "object") return found;
  const entries: [string | number, Json][] = Array.isArray(value)
    ? value.map((item, index) => [index, item])
    : Object.entries(value);
  let best = found;
  for (const [key, item] of entries) {
    if (typeof item === "string") {
      if (best === null || item.length > best.length)
        best = { holder: value, key, length: item.length };
    } else {
      best = longestString(item, best);
    }
  }
  return best;
}

/** The bytes a UTF-16 unit takes in a JSON string (escapes included; a surrogate pair's half 2). */
function jsonBytesOf(code: number): number {
  if (code < 0x20)
    return code === 0x08 || code === 0x09 || code === 0x0a || code === 0x0c || code === 0x0d
      ? 2
      : 6;
  if (code === 0x22 || code === 0x5c) return 2;
  if (code < 0x80) return 1;
  if (code < 0x800) return 2;
  if (code >= 0xd800 && code <= 0xdfff) return 2;
  return 3;
}

/**
 * `text` without as many of its last characters as shed `bytes` bytes of its JSON form, never
 * keeping half a surrogate pair, and never shorter than `floor` units.
 */
function shed(text: string, bytes: number, floor: number): string {
  let end = text.length;
  let shedBytes = 0;
  while (end > floor && shedBytes < bytes) shedBytes += jsonBytesOf(text.charCodeAt(--end));
  const last = text.charCodeAt(end - 1);
  if (end > 0 && last >= 0xd800 && last <= 0xdbff) end--;
  return text.slice(0, end);
}

function serialise(record: Json): string {
  return `${JSON.stringify(record)}\n`;
}

/**
 * `line` (one JSON object and its newline) if it is at most `maxBytes` bytes of UTF-8, else the
 * same record with its longest strings cut until it is; with more fields than fit, the level,
 * time, service and message alone.
 */
export function fitLine(line: string, maxBytes: number): string {
  // Each UTF-16 unit is at most 3 bytes of UTF-8: short lines need no count.
  if (line.length * 3 <= maxBytes || Buffer.byteLength(line) <= maxBytes) return line;
  let record: Json;
  try {
    record = JSON.parse(line) as Json;
  } catch {
    record = null;
  }
  if (record === null || typeof record !== "object" || Array.isArray(record)) {
    return serialise({ msg: "a log line too long to write whole was dropped", truncated: true });
  }
  record.truncated = true;
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const text = serialise(record);
    const excess = Buffer.byteLength(text) - maxBytes;
    if (excess <= 0) return text;
    const slot = longestString(record);
    if (slot === null || slot.length < SHORTEST_CUT) break;
    const strings = slot.holder as Record<string | number, string>;
    // The mark takes 3 bytes back; a string cut down to its floor leaves the rest to the next one.
    strings[slot.key] = shed(strings[slot.key]!, excess + 3, SHORTEST_CUT / 2) + CUT;
  }
  const essentials: { [key: string]: Json } = { truncated: true };
  for (const key of ["level", "time", "service", "requestId", "msg"]) {
    const value = record[key];
    if (value === undefined) continue;
    // 512 units are at most 3 KB of JSON (6 bytes each escaped): the essentials always fit.
    essentials[key] =
      typeof value === "string" ? shed(value, Number.POSITIVE_INFINITY, 512) : value;
  }
  return serialise(essentials);
}
