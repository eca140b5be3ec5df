/**
 * @module
 * Whether a secret reads as something a person wrote rather than something a generator made
 * (probes 71a F2, 71d F2, 72b–72d). A check for the shapes people write, not a strength meter:
 * l33t (`c0rr3ct`), names, acronyms and other languages' words pass it.
 */
import { ENGLISH_BIGRAMS } from "./english-bigrams";
import { ENGLISH_WORDS_TEXT } from "./english-words";

/**
 * Whether the value (as read: NFKC) reads as written:
 * - a fifth or more letters of a script without case (a Chinese, Japanese or Thai sentence);
 * - words and numbers between any punctuation (`Correct-Horse-Battery-Staple-42`,
 *   `john.smith@example.com:prod-2024`), `wordsAndNumbers`;
 * - English words, run together or not (`correcthorsebatterystapleisgreat`), `englishWords`;
 * the last two only while what the words leave could carry fewer than 100 bits (`guessBits`): a
 * label of words before a generated value (`palisade-production-signing-key-` and 32 printable
 * characters, 32 hex digits, a UUID) is as strong as its generated part, and looking only at the
 * shares of words refused up to 1 % of such values (probes 72c A1, 72d F1). Its dates and times
 * are counted as such (`withoutDateTimes`) before either reading.
 */
export function readsAsWritten(text: string): boolean {
  const points = [...text];
  // No generator a deployment uses writes a letter of a script without case (`本番環境の…`), so a
  // fifth of them is writing, whatever Latin words and numbers stand beside it (probe 72b F4).
  const uncased = points.filter((point) => /\p{Lo}/u.test(point)).length;
  if (uncased * 5 >= points.length) return true;
  const dated = withoutDateTimes(text);
  const { rest, bits: hexBits } = withoutHex(dated.rest);
  // A date stands as a word does in a label (`acme_prod_jwt_2025-01-15T10:00:00Z`, probe 76c F2).
  return [wordsAndNumbers(rest, dated.dates), englishWords(rest)].some(
    (words) => words !== null && guessBits(rest, words) + dated.bits + hexBits < GENERATED_BITS,
  );
}

/** A piece of hexadecimal digits in one case, a digit and a letter among them, eight or more. */
const HEX_PIECE =
  /(?<![\p{L}\p{N}])(?:(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}|(?=[0-9A-F]*\d)(?=[0-9A-F]*[A-F])[0-9A-F]{8,})(?![\p{L}\p{N}])/gu;

/**
 * The value without its pieces of hexadecimal digits, and the four bits each of their digits
 * carries: counted as drawn from the letters and digits, they came to 5.2 to 6 bits a digit, and a
 * label before 8 random bytes in hex (`AcmeProdWebhookKeyV2-dcc543d236e41cc3`, 64 bits) was
 * counted at 136 and passed (probe 76c F3).
 */
function withoutHex(text: string): { rest: string; bits: number } {
  let bits = 0;
  const rest = text.replace(HEX_PIECE, (piece) => {
    bits += piece.length * 4;
    return "-";
  });
  return { rest, bits };
}

const YEAR_TEXT = "(?:19|20)\\d\\d";
const MONTH_NUMBER = "(?:0?[1-9]|1[0-2])";
const DAY_NUMBER = "(?:0?[1-9]|[12]\\d|3[01])";
const MONTH_NAME =
  "(?:january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\\.?";
const WEEKDAY =
  "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tues|tue|wed|thurs|thur|thu|fri|sat|sun)\\.?";
const ORDINAL = "(?:st|nd|rd|th)?";
/** The start of a time after a date: `-10.00`, ` 10:00`, `T10:00`. */
const TIME_START = "[t\\s_,-]+(?:[01]?\\d|2[0-3])[:.h-][0-5]\\d";
/**
 * A date as people and programs write one: ISO 8601 (`2025-01-15`, `2025/1/5`, `20250115` before a
 * time, `2025-W49`), day and month either way round before the year (`05/12/2025`, `12.05.2025`;
 * or its last two digits before a time, `15.01.25-10.00.00`, probe 77a F5), a month's name
 * (`5 Dec 2025`, `Dec 5th, 2025`, `Fri, 05 Dec 2025`), and `date`'s own (`Fri Dec  5` before its
 * time, its year after). Not inside a word or a number.
 */
const DATE = new RegExp(
  [
    `(?<!\\d)${YEAR_TEXT}([-/.])${MONTH_NUMBER}\\1${DAY_NUMBER}(?!\\d)`,
    `(?<!\\d)${DAY_NUMBER}([-/.])${DAY_NUMBER}\\2${YEAR_TEXT}(?!\\d)`,
    `(?<!\\d)${DAY_NUMBER}([-/.])${DAY_NUMBER}\\3\\d\\d(?!\\d)(?=${TIME_START})`,
    `(?<!\\d)${YEAR_TEXT}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\\d|3[01])(?=t\\d)`,
    `(?<!\\d)${YEAR_TEXT}-?w(?:0[1-9]|[1-4]\\d|5[0-3])(?:-?[1-7])?(?!\\d)`,
    `(?<!\\p{L})(?:${WEEKDAY},?\\s*)?${DAY_NUMBER}${ORDINAL}[\\s-]?${MONTH_NAME}[\\s,-]*${YEAR_TEXT}(?!\\d)`,
    `(?<!\\p{L})(?:${WEEKDAY},?\\s*)?${MONTH_NAME}[\\s-]?${DAY_NUMBER}${ORDINAL},?[\\s-]*${YEAR_TEXT}(?!\\d)`,
    `(?<!\\p{L})${WEEKDAY}\\s+${MONTH_NAME}\\s+${DAY_NUMBER}(?=\\s+\\d\\d?:\\d\\d)`,
  ].join("|"),
  "giu",
);
/** A time after a date: `T10:00`, ` 10:00:00.000`, `-10-00-00`, `T10.00`, `T100000`. */
const TIME_AFTER =
  /(?:[t\s_,-]+)?(?:(?:[01]?\d|2[0-3])[:.h-][0-5]\d(?:[:.-]([0-5]\d)(?:[.,](\d{1,9}))?)?|t(?:[01]\d|2[0-3])[0-5]\d([0-5]\d)?)(?!\d)/iy;
/** A zone after a time: `Z`, ` UTC`, ` GMT`, `+01:00`, ` +0000`, ` CEST`. */
const ZONE_AFTER =
  /\s?(?:[+-](?:[01]\d|2[0-3]):?[0-5]\d(?!\d)|(?:z|utc|gmt|cet|cest|bst|ist|jst|aest|[ecmp][sd]t)(?!\p{L}))/iuy;
/** `date`'s year, after its time and zone. */
const YEAR_AFTER = /\s+(?:19|20)\d\d(?!\d)/y;
/** A Unix time, in seconds (2001 to 2033) or milliseconds. */
const UNIX_TIME = /(?<!\d)1\d{9}(\d{3})?(?!\d)/g;

/**
 * The value without its dates and times, how many there were, and the bits they carry as such: a
 * day of two hundred years (~16; a week's ~13), its hour and minute (~10.5), second (~5.9), each
 * digit of a fraction (~3.3) and a zone (~5.3 for an offset, ~1 for a name); a Unix time ~28 bits
 * (a second of ten years), ~38 in milliseconds. Counted as the characters they are, the numbers
 * and the `T` and `Z` of `acme-prod-jwt-signing-key-2025-01-15T10:00:00Z` came to 120 bits, and it
 * passed where the same label with the day alone was refused (probes 75b F1, 75e F6), as did a
 * label with `date`'s or a US date (`12/05/2025 10:00:00`, `Fri, 05 Dec 2025 10:00:00 GMT`,
 * probe 76c F1).
 */
function withoutDateTimes(text: string): { rest: string; dates: number; bits: number } {
  let bits = 0;
  let dates = 0;
  let rest = "";
  let from = 0;
  DATE.lastIndex = 0;
  for (let found = DATE.exec(text); found !== null; found = DATE.exec(text)) {
    let end = found.index + found[0].length;
    bits += /w\d/i.test(found[0]) ? Math.log2(200 * 53) : Math.log2(200 * 366);
    TIME_AFTER.lastIndex = end;
    const time = TIME_AFTER.exec(text);
    if (time !== null) {
      end = TIME_AFTER.lastIndex;
      bits += Math.log2(24 * 60);
      if (time[1] !== undefined || time[3] !== undefined) bits += Math.log2(60);
      bits += (time[2]?.length ?? 0) * Math.log2(10);
      ZONE_AFTER.lastIndex = end;
      const zone = ZONE_AFTER.exec(text);
      if (zone !== null) {
        end = ZONE_AFTER.lastIndex;
        bits += /\d/.test(zone[0]) ? Math.log2(40) : 1;
      }
      YEAR_AFTER.lastIndex = end;
      if (YEAR_AFTER.exec(text) !== null) end = YEAR_AFTER.lastIndex;
    }
    rest += `${text.slice(from, found.index)}-`;
    from = end;
    dates++;
    DATE.lastIndex = end;
  }
  rest += text.slice(from);
  const withoutUnixTimes = rest.replace(UNIX_TIME, (_, milliseconds) => {
    bits += Math.log2(10 * 365 * 86_400) + (milliseconds === undefined ? 0 : Math.log2(1000));
    dates++;
    return "-";
  });
  return { rest: withoutUnixTimes, dates, bits };
}

/** Bits a generated part carries at least (32 hex digits ~120); a phrase and a year leave ~25. */
const GENERATED_BITS = 100;

/** Words found in a value: how many letters they take, and the bits they are counted for. */
interface FoundWords {
  letters: number;
  bits: number;
}

/**
 * At most how many bits the value carries, given the words found: the bits they are counted for
 * (`writtenWordBits`), then each letter no word explains drawn from the letters of the cases the
 * value holds (26 or 52) and the digits if it holds any, each number as `numberBits` counts it,
 * each other character (punctuation, a space) from 33 the first time it is seen and a bit each
 * time again (a separator said again is structure).
 * `Correct-Horse-Battery-Staple-1733356800` ~60 bits; a generated part of 32 hex digits carries
 * ~120 by itself, 32 printable characters ~190.
 */
function guessBits(text: string, words: FoundWords): number {
  const points = [...text];
  const letters = points.filter((point) => /\p{L}/u.test(point));
  const others = points.filter((point) => /[^\p{L}\p{N}]/u.test(point));
  const cases =
    (letters.some((point) => /\p{Lu}/u.test(point)) ? 26 : 0) +
    (letters.some((point) => !/\p{Lu}/u.test(point)) ? 26 : 0);
  const distinctOthers = new Set(others).size;
  const hasDigits = /\p{N}/u.test(text);
  const alphabet = Math.max(cases, 26) + (hasDigits ? 10 : 0);
  return (
    words.bits +
    Math.max(0, letters.length - words.letters) * Math.log2(alphabet) +
    numberBits(text, letters.length > 0 ? alphabet : 10) +
    distinctOthers * Math.log2(33) +
    (others.length - distinctOthers)
  );
}

/** Digits in a row up to which a number may be part of a generated run of letters and digits. */
const SHORT_NUMBER = 4;
/** A year of this century or the last, alone: 200 to guess from, not 10,000 (probe 73d F1). */
const YEAR = /^(?:19|20)\d\d$/;
/** A day written `YYYYMMDD`, alone: about 73,000 to guess from, not 100 million. */
const DAY = /^(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])$/;

/**
 * The bits the value's numbers carry: a year (`2025`) or a day (`20250115`) as a date is
 * guessed, a longer number (a timestamp, a telephone number) as its digits drawn from 10, and a
 * shorter one as drawn from the value's `alphabet`, as a generated run of letters and digits
 * draws it (`k8z1X`). A label's date is the first thing guessed after its words; counted as
 * random digits it carried 13 or 27 bits, and labels of words and a date passed
 * (`initech-prod-jwt-signing-key-20250115`, probe 73d F1). Counted from 10, the few digits of 16
 * random bytes in base64url after a label of such words (`PalisadeProductionSigningKey` and 22
 * characters, 128 bits) were too few bits: one in 130 to one in 400 was refused.
 */
function numberBits(text: string, alphabet: number): number {
  let bits = 0;
  for (const number of text.match(/\p{N}+/gu) ?? []) {
    if (YEAR.test(number)) bits += Math.log2(200);
    else if (DAY.test(number)) bits += Math.log2(200 * 366);
    else {
      const digits = [...number].length;
      bits += digits * Math.log2(digits > SHORT_NUMBER ? 10 : alphabet);
    }
  }
  return bits;
}

/** One piece between punctuation: letters, then digits if any (`v2`, `Summer2024`), or digits. */
const PIECE = /^(\p{L}*)(\p{N}*)$/u;
/** Letters as words are written: `word`, `Word`, `WORD`. */
const ONE_WORD = /^(?:\p{Lu}+|\p{Lu}?\p{Ll}+)$/u;
/**
 * Capitalised words joined (`WordWord`, `wordWord`), and after them the capital of a version or a
 * quarter (`…KeyV2`, `…TokenQ32024`): glued so, a label's words were no words at all and passed.
 */
const JOINED_WORDS = /^\p{Lu}?\p{Ll}+(?:\p{Lu}\p{Ll}+)+\p{Lu}?$/u;
/** The words of `JOINED_WORDS`, a version's or quarter's capital on its own. */
const JOINED_PART = /\p{Lu}?\p{Ll}+|\p{Lu}/gu;
/** A version's or quarter's capital after a word (`KeyV`), which no word is spelled with. */
const TRAILING_CAPITAL = /(?<=\p{Ll})\p{Lu}$/u;
/** Letters past which a word must also read as one: a random part is often one case. */
const LONG_WORD = 8;
/** Letters past which a piece in one case is no word at all (a compound runs longer, rarely). */
const LONGEST_WORD = 15;
/** Letters from which a word not among the common ones counts, if it reads as English. */
const COUNTED_WORD = 4;

/**
 * The letters of the words that count among the pieces between punctuation, when those words are
 * three or more and, with the numbers, a third of the value; null otherwise. A word counts when it
 * is a common English word (`commonWords`) or has four letters or more and reads no less
 * English than chance (`englishEvidence` ≥ 0, a word of another script too): generated printable
 * ASCII after a label is cut by its punctuation into many short pieces shaped as words (`mx`,
 * `OIOF`, `PWK0`), which made the label half of a value judged as one (probe 72d F1). A piece that
 * is no word (a word of eight letters or more that reads less English than chance, one in one case
 * longer than fifteen, letters in no word's cases, letters and digits glued but not common words)
 * is a generated part: its characters are left to `guessBits`, which counts them as drawn at
 * random (until probe 75b F5 such a piece made the whole value unread, and a label before 32
 * random bits passed). A number may be any length (a timestamp, a telephone number: probe 72d
 * F2); its digits count towards the third, not the words (`acme-prod-auth-token-key-2025-01-15`
 * had too few letters to be read as written, probe 73d F1).
 */
function wordsAndNumbers(text: string, dates = 0): FoundWords | null {
  let words = dates;
  let letters = 0;
  let bits = 0;
  let digits = 0;
  for (const piece of text.split(/[^\p{L}\p{N}]+/u)) {
    if (piece === "") continue;
    const pieceDigits = piece.match(/\p{N}/gu)?.length ?? 0;
    const shaped = PIECE.exec(piece);
    if (shaped === null) {
      // Words and numbers glued (`Summer2024Winter2025`): only common words count, since random
      // letters and digits alternate so too.
      const glued = commonWordsBetweenNumbers(piece);
      // Not words: a generated part, left for `guessBits` to count as drawn at random.
      if (glued === null) continue;
      digits += pieceDigits;
      words += glued.words;
      letters += glued.letters;
      bits += glued.bits;
      continue;
    }
    const [, word = ""] = shaped;
    if (word === "") {
      digits += pieceDigits;
      continue;
    }
    const parts = wordsAsWritten(word);
    // A generated part (`geRfUw` after `acme-prod-jwt-signing-key-`) is counted as drawn at
    // random, not taken for a sign that the whole value is generated: a label of words before 32
    // random bits passed 87 times in 100 (probe 75b F5).
    if (parts === null) continue;
    digits += pieceDigits;
    const written = writtenWordsOf(parts);
    words += written.words;
    letters += written.letters;
    bits += written.bits;
  }
  return words >= 3 && (letters + digits) * 3 >= [...text].length ? { letters, bits } : null;
}

/** The words of `parts` that count as written (`writtenWordBits`): how many, their letters, bits. */
function writtenWordsOf(parts: readonly string[]): {
  words: number;
  letters: number;
  bits: number;
} {
  let words = 0;
  let letters = 0;
  let bits = 0;
  for (const part of parts) {
    const partBits = writtenWordBits(part);
    if (partBits === null) continue;
    words++;
    letters += [...part].length;
    bits += partBits;
  }
  return { words, letters, bits };
}

/**
 * The words of letters written as one word (`ONE_WORD`) or capitalised words joined
 * (`JOINED_WORDS`), or null for letters not so written.
 */
function wordsAsWritten(word: string): string[] | null {
  const wordLength = [...word].length;
  const spelled = latinWords(word.replace(TRAILING_CAPITAL, ""));
  if (wordLength >= LONG_WORD && englishEvidence(spelled) < 0) return null;
  if (ONE_WORD.test(word)) {
    // Longer than words are: a generated part in one case (`…-key-ASSASSTIOHYRCAUZBUKURAB…`).
    return wordLength > LONGEST_WORD ? null : [word];
  }
  if (
    JOINED_WORDS.test(word) &&
    englishEvidence(spelled) >= 0 &&
    // Random letters glued to a label (`PalisadeProductionKeympbadlx…`) are no word.
    spelled.every((part) => part.length <= LONGEST_WORD)
  ) {
    return word.match(JOINED_PART) ?? [];
  }
  return null;
}

/**
 * The bits a word shaped as one is counted for, when it counts as a word written: a common word's
 * by its rank (`commonWordBits`), the English letter model's (`englishBits`) for
 * another of four letters or more that reads no less English than chance (so random letters that
 * happen to, `UXZKO`, keep about the bits they have; a word of another script, none); null for one
 * that does not count.
 */
function writtenWordBits(word: string): number | null {
  const lower = word.toLowerCase();
  const common = commonWordBits(lower);
  if (common !== null) return common;
  if (TWO_LETTER_WORDS.has(lower)) return 0;
  if ([...word].length < COUNTED_WORD) return null;
  const latin = latinWords(lower);
  return englishEvidence(latin) >= 0 ? englishBits(latin) : null;
}

/**
 * The words of a piece of letters and digits alternating, when every group of letters is common
 * words (`commonWords`, capitals splitting them), capitalised words joined (`JOINED_WORDS`:
 * `2024UmbrellaWhatsappVerifyToken`) or one letter (a version's or quarter's, `2025Q1`, which
 * counts as no word); null otherwise.
 */
function commonWordsBetweenNumbers(
  piece: string,
): { words: number; letters: number; bits: number } | null {
  let words = 0;
  let letters = 0;
  let bits = 0;
  for (const group of piece.match(/\p{L}+/gu) ?? []) {
    if ([...group].length === 1) continue;
    if (JOINED_WORDS.test(group)) {
      const joined = wordsAsWritten(group);
      if (joined === null) return null;
      const written = writtenWordsOf(joined);
      words += written.words;
      letters += written.letters;
      bits += written.bits;
      continue;
    }
    const parts = latinWords(group);
    if (parts.join("").length !== group.length) return null;
    for (const part of parts) {
      const partBits = commonWordBits(part);
      if (partBits === null) return null;
      bits += partBits;
    }
    words += parts.length;
    letters += group.length;
  }
  return { words, letters, bits };
}

/**
 * The words of a web or mail address (`https://www.company.com/…`): structure, guessed with the
 * most common words.
 */
const ADDRESS_WORDS = ["http", "https", "www", "com", "org", "net", "mail"];

/**
 * The words a secret's name is made of: what it is and is for, where and when it runs, what made
 * it. A label of them (`acme-corp-production-jwt-signing-key-january-2025`) is what someone who
 * knows the service guesses first, and counted by their rank (`production` ~7.7 bits) or as random
 * letters (`jwt` ~14) such labels passed (probe 73d F1). Rare in a generator's passphrase: 26 of
 * EFF's 7,776 words are among them.
 */
const LABEL_WORDS = `
key keys token tokens jwt jws jwe hmac csrf xsrf api auth authentication authorization oauth
audit signing sign signature verify verification encryption encrypt crypto access refresh
session sessions cookie webhook webhooks credential credentials passphrase bearer client login
admin user users app application service server backend frontend gateway payment payments
billing stripe metrics monitoring logging whatsapp meta palisade chat chatbot corp company team
production prod staging stage development dev prd stg uat test testing live sandbox local env
environment cloud cluster region east west north south internal primary secondary master main
backup version rotated rotation created generated issued january february march april june july
august september october november december
`
  .split(/\s+/)
  .filter(Boolean);

const LABEL_WORD_SET: ReadonlySet<string> = new Set(LABEL_WORDS);

interface CommonWords {
  /**
   * The common words, each with its rank: 1 for the most common (`you`), 5,000 for the least; an
   * address's words (`ADDRESS_WORDS`) and a label's (`LABEL_WORDS`) rank with the first.
   */
  ranks: ReadonlyMap<string, number>;
  longest: number;
}

/**
 * Built when a secret is judged and held only while something judges: only the configuration
 * reads it, once at start (and a CLI command), so a running service does not keep its 5,000
 * strings (~1 MB of heap) for good (issue #13's idle RSS).
 */
let commonWordsHeld: WeakRef<CommonWords> | null = null;

function commonWords(): CommonWords {
  const held = commonWordsHeld?.deref();
  if (held !== undefined) return held;
  const ranks = new Map([
    ...ENGLISH_WORDS_TEXT.split(/\s+/)
      .filter(Boolean)
      .map((word, index): [string, number] => [word, index + 1]),
    ...[...ADDRESS_WORDS, ...LABEL_WORDS].map((word): [string, number] => [word, 1]),
  ]);
  let longest = 0;
  for (const word of ranks.keys()) longest = Math.max(longest, word.length);
  const built = { ranks, longest };
  commonWordsHeld = new WeakRef(built);
  return built;
}
/**
 * The two-letter words among the 150 most common (`to`, `of`, `is`), which the common words of
 * three letters or more leave out: each counts as nothing, like the sixteen most common. Left
 * out, `to be or not to be that is the question` was too few words to be read as written (probe
 * 73d F2).
 */
const TWO_LETTER_WORDS = new Set(
  "to it of is in me on we my be do he no up oh go at so if as us an or by am".split(" "),
);
/** The most common words, which any sentence needs, count as nothing: the first sixteen. */
const FREE_WORD_BITS = 4;

/**
 * The bits a common word is counted for, or null for another: log2 of its rank, what guessing the
 * common words most common first takes to reach it, less the four bits of the sixteen most
 * common (`the` and `you` nothing, `horse` ~5.7, `battery` ~7.9). A phrase a person writes is
 * mostly words near the top; a passphrase a generator draws from a list of thousands (EFF's
 * 7,776, as Bitwarden's and 1Password's generators do) is mostly words far down it or off it.
 * Counting every common word as nothing refused one in twenty-two ten-word passphrases of 129
 * bits (probe 73a F5); counting them whole let a written URL and a phrase with a date pass.
 */
function commonWordBits(word: string): number | null {
  const rank = commonWords().ranks.get(word);
  return rank === undefined ? null : Math.max(0, Math.log2(rank) - FREE_WORD_BITS);
}
/** Of the value's Latin letters, the share the common words must cover. */
const COVERED_SHARE = 0.7;
/** Letters in a row no common word covers past which a part is not words (a generated part). */
const LONGEST_UNCOVERED = 5;
/** Letters of a run from which it must be mostly words itself, not only with the rest. */
const OWN_RUN = 12;

/**
 * The letters common English words of three letters or more (`ENGLISH_WORDS_TEXT`) cover, found in
 * each run of letters as the most letters a sequence of such words covers (in a run of fewer than
 * twelve letters they do not fill, words of four letters or more), with a label's one name, when
 * they are at least 70 % of the letters and half of the value, no more than five letters in a row
 * are left uncovered but the name and no run of twelve letters or more is less than 70 % covered
 * itself; null otherwise. Written phrases cover 0.72 to 1 of their letters.
 */
function englishWords(text: string): FoundWords | null {
  let letters = 0;
  let covered = 0;
  let bits = 0;
  let labelWords = 0;
  let names = 0;
  for (const run of latinWords(text)) {
    let cover = commonWordsCover(run, 3);
    // Three letters in a short run they do not fill are as often chance as a word: a label run
    // together before 16 random bytes in base64url (`…SigningKeyEbutHSgOFFSKA…`) found `but`,
    // `off`, `org` and `www` in them and was refused one time in 4,000.
    if (run.length < OWN_RUN && cover.letters < run.length) cover = commonWordsCover(run, 4);
    labelWords += cover.words.filter((word) => LABEL_WORD_SET.has(word)).length;
    let runCovered = cover.letters;
    for (const stretch of cover.uncovered) {
      if (stretch.length <= LONGEST_UNCOVERED) continue;
      // A name (`umbrella`, `globex`) reads as English and is as long as words are; a generated
      // part does not.
      if (stretch.length > LONGEST_WORD || englishEvidence([stretch]) < 0) return null;
      names++;
      runCovered += stretch.length;
      bits += englishBits([stretch]);
    }
    // A run of its own that is not mostly words is a generated part beside a label of them.
    if (run.length >= OWN_RUN && runCovered < run.length * COVERED_SHARE) return null;
    letters += run.length;
    covered += runCovered;
    bits += cover.bits;
  }
  // A label (two of its words or more) may hold one name no common word covers
  // (`umbrellaprodwhatsappverifytoken2025` passed); a passphrase run together holds many words
  // none covers, and counted as names eight of EFF's were refused one time in 40.
  if (names > (labelWords >= 2 ? 1 : 0)) return null;
  return covered * 2 >= [...text].length && covered >= letters * COVERED_SHARE
    ? { letters: covered, bits }
    : null;
}

/**
 * The most letters of `run` common words of `shortest` letters or more cover, those words and their
 * bits (`commonWordBits`), and the stretches they leave uncovered.
 */
function commonWordsCover(
  run: string,
  shortest: number,
): {
  letters: number;
  bits: number;
  words: string[];
  uncovered: string[];
} {
  // best[i]: the most letters of run[0, i) covered; word[i]: the length of the word ending at i in
  // that cover, 0 for a letter left uncovered.
  const best = new Array<number>(run.length + 1).fill(0);
  const word = new Array<number>(run.length + 1).fill(0);
  const { ranks, longest } = commonWords();
  for (let end = 1; end <= run.length; end++) {
    best[end] = best[end - 1]!;
    for (let size = shortest; size <= Math.min(longest, end); size++) {
      if (best[end - size]! + size > best[end]! && ranks.has(run.slice(end - size, end))) {
        best[end] = best[end - size]! + size;
        word[end] = size;
      }
    }
  }
  const words: string[] = [];
  const uncovered: string[] = [];
  let stretchEnd = run.length;
  let bits = 0;
  for (let end = run.length; end > 0; ) {
    if (word[end]! > 0) {
      if (stretchEnd > end) uncovered.push(run.slice(end, stretchEnd));
      const found = run.slice(end - word[end]!, end);
      words.push(found);
      bits += commonWordBits(found)!;
      end -= word[end]!;
      stretchEnd = end;
    } else {
      end--;
    }
  }
  if (stretchEnd > 0) uncovered.push(run.slice(0, stretchEnd));
  return { letters: best[run.length]!, bits, words, uncovered };
}

/** The runs of Latin letters, split where a capital follows a small letter, in lower case. */
function latinWords(text: string): string[] {
  return (text.match(/[A-Z]+(?![a-z])|[A-Z]?[a-z]+/g) ?? []).map((word) => word.toLowerCase());
}

/** The bits guessing the words takes by the English letter model (`ENGLISH_BIGRAMS`). */
function englishBits(words: readonly string[]): number {
  let halfBits = 0;
  for (const word of words) {
    let row = 0;
    for (let i = 0; i < word.length; i++) {
      const letter = word.charCodeAt(i) - 97;
      halfBits += ENGLISH_BIGRAMS[row * 26 + letter]!;
      row = letter + 1;
    }
  }
  return halfBits / 2;
}

/**
 * How many bits more likely the words' letters are English (`ENGLISH_BIGRAMS`, each word scored
 * from its start) than letters drawn at random from the alphabet they seem to be drawn from (a to
 * f when those are all there are, else the 26). Generated letters score below zero: about −1 bit a
 * letter.
 */
function englishEvidence(words: readonly string[]): number {
  const chanceBits = words.every((word) => /^[a-f]*$/.test(word)) ? Math.log2(6) : Math.log2(26);
  const letters = words.reduce((sum, word) => sum + word.length, 0);
  return letters * chanceBits - englishBits(words);
}
