/**
 * @module
 * A reply cut into the messages Graph takes. The Cloud API refuses a text body over 4,096
 * characters (`(#100) Invalid parameter`, a permanent refusal), while a chat reply may run to
 * 65,536 and more (1,024 tokens of English are 4–5 thousand characters): such a reply was given up
 * unsent, its turn charged and kept in the conversation, and the sender heard nothing (probe 59b
 * F1). A longer reply now goes out as consecutive messages, in order, each cut where a reader
 * would pause: a paragraph's end, else a line's, a sentence's, a space, and only in a word that
 * fills a whole part between two characters as a reader sees them (grapheme clusters).
 *
 * Lengths are counted in UTF-16 code units, as JavaScript counts a string: never fewer than the
 * characters (code points) Graph counts, so a part within the bound here is within it there.
 */
import { showsSomething } from "../../visible-text";

/** The most characters Graph takes in one text message's body. */
export const GRAPH_TEXT_LIMIT = 4096;

/**
 * Where a part may end at the earliest, as a share of the bound: a break earlier than this would
 * make a short message of a long reply; past it, a weaker break is looked for instead.
 */
const EARLIEST_BREAK = 0.5;

/** Sentence ends that a space follows (a full stop in a number or a name does not end one). */
const SENTENCE_ENDS = new Set([".", "!", "?", "…"]);
/**
 * Chinese and Japanese full stops and marks, which no space follows (probe 59c F3: such text was
 * cut inside a sentence, at the bound, where a stop came every few characters).
 */
const WIDE_SENTENCE_ENDS = new Set(["。", "！", "？", "｡"]);
const isSpace = (char: string | undefined) => char !== undefined && /\s/u.test(char);
const LINE_BREAK = /[\n\r\v\f\u0085\u2028\u2029]/u;
/**
 * What closes a sentence after its stop: closing brackets and quotes (」』）】” ’ », and ASCII
 * quotes there), and the combining marks on them. A cut goes after them, never before them; nor
 * before a combining mark, which belongs to the character before it (probe 59d F4: a part began
 * with 」).
 */
const CLOSES_SENTENCE = /^[\p{Pe}\p{Pf}\p{M}"']$/u;
/**
 * Nor what a line may not begin with in the text's own rules (probe 61b F3: a part began with `、`
 * or `!`): the Japanese and Chinese commas, stops and colons, small kana (full and halfwidth), the
 * long-vowel, iteration and wave marks, and the Thai and Lao repetition marks, which go with the
 * character before them wherever the cut falls (probe 62b F4);
 */
const MUST_NOT_BEGIN_A_PART =
  /^(?:[\p{Pe}\p{Pf}\p{M}]|[、。，．：；！？・ーぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶㇰ-ㇿ々〻ゝゞヽヾｧ-ｯｰ､･〜゠ๆໆ])$/u;
/**
 * and, within a line, the French `! ? : ;` a (narrow) no-break space puts after a word, ellipses
 * and dashes (`……` is one Chinese mark), and a comma or a full stop standing alone: a paragraph or
 * a line may begin with `.NET`, `...and then` or `!important` (probe 62b F3: the rule passed over a
 * paragraph's end for a cut inside the next).
 */
const MUST_NOT_BEGIN_A_PART_IN_A_LINE = /^[!?:;‼⁇⁈⁉…‥‐‒–—―⸺⸻]$/u;
const STANDS_ALONE = /^[.,](?:\s|$)/u;
/**
 * How far a look for a sentence's stop, or for where the next part begins, goes past closing
 * marks or white space: each candidate cut looks this far at most, so a run of thousands of quotes
 * costs no more than letters do (probe 60a F-RP2: every candidate walked the whole run, a second
 * for a long reply, on the event loop).
 */
const MOST_LOOKED_PAST = 8;

/** The code point that ends just before `end` (a surrogate pair whole), and where it starts. */
function codePointBefore(text: string, end: number): { char: string; at: number } {
  const low = text.charCodeAt(end - 1);
  const high = text.charCodeAt(end - 2);
  if (low >= 0xdc00 && low <= 0xdfff && high >= 0xd800 && high <= 0xdbff) {
    return { char: text.slice(end - 2, end), at: end - 2 };
  }
  return { char: text.charAt(end - 1), at: end - 1 };
}

/**
 * Whether a part may begin where the text after a cut at `i` begins, past the white space the cut
 * trims: not with a closing bracket or quote, nor a combining mark (a code point, so one outside
 * the BMP too: probe 60a F-RP1). A cut at the space before a French `»`, or before a mark, began
 * a part with it. A longer run of white space than MOST_LOOKED_PAST is a break of its own.
 */
function beginsWell(text: string, i: number): boolean {
  let at = i;
  let newLine = false;
  while (at < text.length && isSpace(text[at])) {
    if (at - i >= MOST_LOOKED_PAST) return true;
    if (LINE_BREAK.test(text[at]!)) newLine = true;
    at++;
  }
  const first = text.codePointAt(at);
  if (first === undefined) return true;
  const char = String.fromCodePoint(first);
  if (MUST_NOT_BEGIN_A_PART.test(char)) return false;
  if (newLine) return true;
  return !MUST_NOT_BEGIN_A_PART_IN_A_LINE.test(char) && !STANDS_ALONE.test(text.slice(at, at + 2));
}

/** A part of a reply, and where in the reply the text after it begins (past the break it trims). */
export interface ReplyPart {
  text: string;
  next: number;
}

/**
 * The parts `reply` is sent as: itself when it fits in one message (unchanged), else consecutive
 * parts of at most `limit` code units, each trimmed at the cut (white space there is the break
 * itself, unless a combining mark rides on it), none empty, none of characters that show nothing
 * (a run of zero-width spaces after the text was a blank message of its own: probe 62b F1b; its
 * range goes with the part before it); always at least one. A longer reply of white space alone is
 * its first `limit` characters, as a shorter one is sent as it is (probe 59c F1: it was no part at
 * all, and its row was neither sent nor given up, holding the sender's later messages back).
 */
export function replyParts(reply: string, limit = GRAPH_TEXT_LIMIT): string[] {
  return replyPieces(reply, limit).map((part) => part.text);
}

/**
 * The parts of `reply` (replyParts), each with where the rest begins: what a send records as each
 * is accepted, so the next try cuts the rest afresh from there rather than counting parts of a cut
 * another release may make differently (probe 62b F2: a reply half sent across an upgrade that
 * changed the cutting sent text twice, or lost it). `keepInvisible`: parts that show nothing kept,
 * as the release before sent them (outbox-offsets-upgrade.ts).
 */
export function replyPieces(
  reply: string,
  limit = GRAPH_TEXT_LIMIT,
  options: { keepInvisible?: boolean } = {},
): ReplyPart[] {
  if (reply.length <= limit) return [{ text: reply, next: reply.length }];
  if (reply.trim() === "") {
    return [{ text: reply.slice(0, lastGraphemeBoundary(reply, limit)), next: reply.length }];
  }
  const pieces: ReplyPart[] = [];
  let rest = reply;
  while (rest.length > limit) {
    const cut = cutPoint(rest, limit);
    const head = rest.slice(0, cut).trimEnd();
    // White space at a cut is the break itself, unless a mark rides on it (a cut between
    // characters, where nothing better was found): trimmed, the mark would begin the part alone.
    const after = rest.slice(cut);
    const trimmed = after.trimStart();
    rest = beginsWell(trimmed, 0) ? trimmed : after;
    const next = reply.length - rest.length;
    if (head !== "") pieces.push({ text: head, next });
    else if (pieces.length > 0) pieces[pieces.length - 1]!.next = next;
  }
  if (rest !== "") pieces.push({ text: rest, next: reply.length });
  if (options.keepInvisible) return pieces;
  const shown: ReplyPart[] = [];
  for (const piece of pieces) {
    if (showsSomething(piece.text)) shown.push(piece);
    else if (shown.length > 0) shown[shown.length - 1]!.next = piece.next;
  }
  if (shown.length === 0) return [{ text: pieces[0]!.text, next: reply.length }];
  return shown;
}

/** The length of the next part of `text` (longer than `limit`): between 1 and `limit`. */
function cutPoint(text: string, limit: number): number {
  const earliest = Math.max(1, Math.floor(limit * EARLIEST_BREAK));
  // Each finder gives the part's length for a break at `i`, or -1 where there is none.
  const finders: ((i: number) => number)[] = [
    (i) => (text[i] === "\n" && text[i + 1] === "\n" ? i : -1),
    (i) => (text[i] === "\n" ? i : -1),
    (i) => (sentenceEndsAt(text, i) ? i : -1),
    (i) => (isSpace(text[i]) ? i : -1),
  ];
  for (const find of finders) {
    for (let i = limit; i >= earliest; i--) {
      const cut = find(i);
      if (cut >= earliest && beginsWell(text, cut)) return cut;
    }
  }
  return lastGraphemeBoundary(text, limit);
}

/**
 * Whether a sentence ends just before `i`: its stop, then what closes it (and the space French puts
 * before `»`), looked past MOST_LOOKED_PAST code points at most.
 */
function sentenceEndsAt(text: string, i: number): boolean {
  let end = i;
  for (let looked = 0; end > 0; looked++) {
    const { char, at } = codePointBefore(text, end);
    if (WIDE_SENTENCE_ENDS.has(char)) return true;
    if (SENTENCE_ENDS.has(char)) return isSpace(text[i]);
    if (looked >= MOST_LOOKED_PAST || !(CLOSES_SENTENCE.test(char) || isSpace(char))) return false;
    end = at;
  }
  return false;
}

/**
 * The last boundary between two characters as a reader sees them at or before `limit` where a part
 * may begin (not before a closing bracket or quote: probe 60c F8, a part began with 」), looked
 * back MOST_LOOKED_PAST boundaries at most, else the last one; a single cluster longer than the
 * bound (hundreds of combining marks) is cut between code points.
 */
function lastGraphemeBoundary(text: string, limit: number): number {
  const segmenter = new Intl.Segmenter(undefined, { granularity: "grapheme" });
  const last: number[] = [];
  // Two code units past the bound, so the code point after it is whole: cut at `limit + 1`, an
  // astral one was a lone surrogate there, and the segmenter put a boundary before it that the text
  // has not, inside a flag, a skin tone or a ZWJ sequence (probe 61b F1).
  for (const { index } of segmenter.segment(text.slice(0, limit + 2))) {
    if (index > limit) break;
    if (index === 0) continue;
    last.push(index);
    if (last.length > MOST_LOOKED_PAST + 1) last.shift();
  }
  for (let k = last.length - 1; k >= 0; k--) {
    if (beginsWell(text, last[k]!)) return last[k]!;
  }
  const boundary = last.at(-1) ?? 0;
  if (boundary > 0) return boundary;
  const splitsPair = /[\uD800-\uDBFF]/.test(text[limit - 1] ?? "");
  return splitsPair ? limit - 1 : limit;
}
