/**
 * @module
 * The offline provider's FAQ: loading, validating and matching.
 *
 * Format (JSON, `CHAT_FAQ_PATH`; the shipped default is `default-faq.json`, imported):
 *
 *   { "fallback": "What to say when nothing matches.",
 *     "entries": [ { "question": "How do I sign up?", "keywords": ["sign up", "register"],
 *                    "answer": "POST /api/auth/register …" } ] }
 *
 * Matching is keyword overlap on normalised words. Text is NFKC-normalised, lower-cased and split
 * on anything that is not a letter or a digit; stop words ("the", "how", "do", …) and one-letter
 * words are dropped, and a trailing "s" is dropped from words longer than three letters (keys →
 * key). An entry scores 2 points per keyword whose words all occur in the message (a keyword may
 * be a phrase: "api key"), plus 1 point per distinct word of its question that occurs. The entry
 * with the highest score answers, the earlier one on a tie; an entry needs at least one keyword to
 * match. Otherwise the fallback is answered, followed by a few of the questions it can answer.
 */
import { readBoundedFile, UnreadableFile } from "../../../config/bounded-file";
import { ConfigError } from "../../../config/error";
// Imported, not read from beside this file, so that a bundle (`bun run build`) carries it.
import defaultFaq from "./default-faq.json" with { type: "json" };

/** How errors name the shipped FAQ. */
const DEFAULT_FAQ_NAME = "the shipped default-faq.json";

const MAX_ENTRIES = 1000;
/** A thousand entries of the longest answers and keywords allowed fit well within it. */
const MAX_FAQ_BYTES = 16 * 1024 * 1024;
const MAX_KEYWORDS = 50;
const MAX_TEXT = 8000;
/** How many questions the fallback lists. */
const FALLBACK_EXAMPLES = 8;

export interface FaqEntry {
  question: string;
  keywords: string[];
  answer: string;
}

export interface Faq {
  fallback: string;
  entries: FaqEntry[];
}

const STOP_WORDS = new Set(
  (
    "a an and are as at be but by can could do does did for from get got had has have how i if in " +
    "into is it its me my of on or our so than that the their them then there these they this to " +
    "up us was we were what when where which who whom why will with would you your yours please " +
    "tell about any some there's what's it's i'm"
  ).split(" "),
);

/** The words of a text as matching sees them (see the module comment). */
export function normaliseWords(text: string): string[] {
  const words: string[] = [];
  for (const raw of text
    .normalize("NFKC")
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)) {
    if (raw.length < 2 || STOP_WORDS.has(raw)) continue;
    words.push(raw.length > 3 && raw.endsWith("s") && !raw.endsWith("ss") ? raw.slice(0, -1) : raw);
  }
  return words;
}

interface IndexedEntry {
  entry: FaqEntry;
  keywords: string[][];
  questionWords: string[];
}

export interface FaqMatcher {
  /** The answer for a message: the best entry's, or the fallback with examples. */
  answer(message: string): { text: string; matched: FaqEntry | null };
  /** Every text `answer` can return: each entry's answer and the fallback. */
  replies(): string[];
}

export function createFaqMatcher(faq: Faq): FaqMatcher {
  const indexed: IndexedEntry[] = faq.entries.map((entry) => ({
    entry,
    keywords: entry.keywords.map(normaliseWords).filter((words) => words.length > 0),
    questionWords: [...new Set(normaliseWords(entry.question))],
  }));
  const examples = faq.entries
    .slice(0, FALLBACK_EXAMPLES)
    .map((entry) => `- ${entry.question}`)
    .join("\n");
  const fallback = examples
    ? `${faq.fallback}\n\nYou can ask, for example:\n${examples}`
    : faq.fallback;

  return {
    replies: () => [fallback, ...faq.entries.map((entry) => entry.answer)],
    answer(message) {
      const words = new Set(normaliseWords(message));
      let best: IndexedEntry | null = null;
      let bestScore = 0;
      for (const candidate of indexed) {
        let keywordHits = 0;
        for (const keyword of candidate.keywords) {
          if (keyword.every((word) => words.has(word))) keywordHits++;
        }
        if (keywordHits === 0) continue;
        let score = keywordHits * 2;
        for (const word of candidate.questionWords) if (words.has(word)) score++;
        if (score > bestScore) {
          best = candidate;
          bestScore = score;
        }
      }
      return best
        ? { text: best.entry.answer, matched: best.entry }
        : { text: fallback, matched: null };
    },
  };
}

function fail(path: string, reason: string): never {
  throw new ConfigError("CHAT_FAQ_PATH", `${path} ${reason}`);
}

function text(path: string, value: unknown, where: string, max: number): string {
  if (typeof value !== "string" || value.trim() === "")
    fail(path, `${where} must be a non-empty string`);
  if (value.length > max) fail(path, `${where} must be at most ${max} characters`);
  return value;
}

function onlyKeys(path: string, value: object, allowed: readonly string[], where: string) {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) fail(path, `${where} has an unknown field "${key.slice(0, 40)}"`);
  }
}

/** Validates a parsed FAQ document; throws a ConfigError naming CHAT_FAQ_PATH and the first fault. */
export function validateFaq(path: string, document: unknown): Faq {
  if (typeof document !== "object" || document === null || Array.isArray(document)) {
    fail(path, "must hold a JSON object with fallback and entries");
  }
  const record = document as Record<string, unknown>;
  onlyKeys(path, record, ["fallback", "entries"], "the document");
  const fallback = text(path, record.fallback, "fallback", MAX_TEXT);
  const rawEntries = record.entries;
  if (!Array.isArray(rawEntries) || rawEntries.length === 0) {
    fail(path, "entries must be a non-empty array");
  }
  if (rawEntries.length > MAX_ENTRIES) fail(path, `entries must hold at most ${MAX_ENTRIES}`);
  const entries = rawEntries.map((raw, i): FaqEntry => {
    const where = `entries[${i}]`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      fail(path, `${where} must be an object with question, keywords and answer`);
    }
    const entry = raw as Record<string, unknown>;
    onlyKeys(path, entry, ["question", "keywords", "answer"], where);
    const question = text(path, entry.question, `${where}.question`, 500);
    const answer = text(path, entry.answer, `${where}.answer`, MAX_TEXT);
    const keywords = entry.keywords;
    if (!Array.isArray(keywords) || keywords.length === 0 || keywords.length > MAX_KEYWORDS) {
      fail(path, `${where}.keywords must be an array of 1 to ${MAX_KEYWORDS} strings`);
    }
    keywords.forEach((keyword, k) => {
      text(path, keyword, `${where}.keywords[${k}]`, 100);
      if (normaliseWords(keyword as string).length === 0) {
        fail(path, `${where}.keywords[${k}] has no word that can match (only stop words)`);
      }
    });
    return { question, keywords: keywords as string[], answer };
  });
  return { fallback, entries };
}

/** Reads and validates the FAQ at `path` (the shipped one when null). */
export function loadFaq(path: string | null): Faq {
  // A copy: the validated FAQ keeps the document's arrays, and the import is shared.
  if (path === null) return validateFaq(DEFAULT_FAQ_NAME, structuredClone(defaultFaq));
  let raw: string;
  try {
    raw = readBoundedFile(path, MAX_FAQ_BYTES);
  } catch (error) {
    fail(path, `cannot be read (${error instanceof UnreadableFile ? error.reason : "unreadable"})`);
  }
  let document: unknown;
  try {
    document = JSON.parse(raw);
  } catch {
    fail(path, "is not valid JSON");
  }
  return validateFaq(path, document);
}
