/**
 * @module
 * Password policy and hashing. Strength is zxcvbn's score, whose dictionaries hold the common and
 * leaked passwords, so there is no hand-made blocklist. Hashes are argon2id through Bun.password.
 * A password is checked, hashed and verified in one spelling, NFKC (NIST SP 800-63B 5.1.1.2): a
 * composed and a decomposed accent are one password, and a fullwidth or mathematical spelling of a
 * dictionary word is that word to the strength check, as an attacker undoes it with the same pass
 * (probe 38a F2: `ｐａｓｓｗｏｒｄ１２３４` scored as random and was accepted in production).
 */
import type { PasswordPolicy } from "../../config";
import { seenCharacters, withoutUnseen } from "../../look-alikes";
import { showsSomething } from "../../visible-text";
import { passwordSkeleton } from "./password-skeleton";

export type PasswordVerdict = { ok: true } | { ok: false; rule: string; message: string };

export interface PasswordHashing {
  /** argon2id memory in KiB; Bun's default when absent. */
  memoryCost?: number;
  timeCost?: number;
}

/** zxcvbn's core and the two dictionaries the checker uses. */
export type PasswordStrengthModules = [
  typeof import("@zxcvbn-ts/core"),
  typeof import("@zxcvbn-ts/language-common"),
  typeof import("@zxcvbn-ts/language-en"),
];

/**
 * Loads zxcvbn. Its dictionaries are decompressed when their modules are evaluated (260–380 ms of
 * CPU and ~40 MB of RSS on the shared bench machine), so they are imported on the first
 * registration, not at the top: a process that never registers anyone never loads them. A dynamic
 * import, not a `require`, so that a bundle (`bun run build`) keeps them (1.6 MB of text) in a
 * chunk of their own instead of in the entry that every start parses. The module cache makes
 * later loads reuse them.
 */
export function loadPasswordStrength(): Promise<PasswordStrengthModules> {
  return Promise.all([
    import("@zxcvbn-ts/core"),
    import("@zxcvbn-ts/language-common"),
    import("@zxcvbn-ts/language-en"),
  ]);
}

/** The one spelling a password is checked, hashed and verified in. */
export function normalizedPassword(password: string): string {
  return password.normalize("NFKC");
}

/** A password's length in characters (code points), as the policy counts it: an emoji is one. */
function characters(text: string): number {
  let count = 0;
  for (const _ of text) count++;
  return count;
}

/**
 * The characters (UTF-16 units) of a password zxcvbn judges, from its start: the strength of the
 * first 64 is a floor for the whole, and a longer one that starts weak is judged by that start.
 */
export const STRENGTH_CHECKED_CHARACTERS = 64;
/**
 * A password of up to this many UTF-16 units is judged with zxcvbn's 100 l33t spellings; a longer
 * one with ten. zxcvbn matches its dictionaries against every spelling it tries, so the cost grows
 * with their count times the square of the length: 100 spellings of 64 characters held the event
 * loop ~200 ms, of 20 characters ~25 ms, and ten of 64 ~20 ms. The l33t spellings of common
 * passwords are short: with ten for every length, `jenn!fer1234` and `qw3r7y|_|!0p` scored 3 and
 * passed production (probe 77b F1: 352 of 9,000 such spellings).
 */
export const FULL_L33T_CHARACTERS = 20;
const L33T_SPELLINGS_OF_SHORT = 100;
const L33T_SPELLINGS_OF_LONG = 10;

/**
 * The piece a password is made of said again, whole or in part (`jenn!fer1234jenn!fer12`), when
 * the piece is short enough for all l33t spellings; null otherwise. Its shortest period, from
 * the prefix function (Knuth–Morris–Pratt), in time linear in the length.
 */
export function repeatedPiece(password: string): string | null {
  const length = password.length;
  const border = new Uint32Array(length);
  for (let i = 1; i < length; i++) {
    let matched = border[i - 1]!;
    while (matched > 0 && password[i] !== password[matched]) matched = border[matched - 1]!;
    if (password[i] === password[matched]) matched++;
    border[i] = matched;
  }
  const period = length - (length === 0 ? 0 : border[length - 1]!);
  return period <= FULL_L33T_CHARACTERS && period < length ? password.slice(0, period) : null;
}

/** Builds the checker once zxcvbn is loaded. */
export async function createPasswordChecker(
  policy: PasswordPolicy,
  load: () => Promise<PasswordStrengthModules> = loadPasswordStrength,
) {
  const [{ ZxcvbnFactory }, zxcvbnCommon, zxcvbnEnglish] = await load();
  const dictionaries = {
    dictionary: { ...zxcvbnCommon.dictionary, ...zxcvbnEnglish.dictionary },
    graphs: zxcvbnCommon.adjacencyGraphs,
    translations: zxcvbnEnglish.translations,
  };
  // zxcvbn's matching runs on the event loop, before the password-work queue, for anyone who
  // registers; its l33t and date matching grows faster than the length: a 256-character
  // `@dm1n1990…` took 2.5–4 s with its defaults and held every other request that long (probe
  // 76a F1). Two checkers, as the spellings tried are an option of the checker, not of a check.
  const shortChecker = new ZxcvbnFactory({
    ...dictionaries,
    maxLength: FULL_L33T_CHARACTERS,
    l33tMaxSubstitutions: L33T_SPELLINGS_OF_SHORT,
  });
  const longChecker = new ZxcvbnFactory({
    ...dictionaries,
    maxLength: STRENGTH_CHECKED_CHARACTERS,
    l33tMaxSubstitutions: L33T_SPELLINGS_OF_LONG,
  });
  const strengthOf = (password: string, userInputs: string[]) => {
    if (password.length <= FULL_L33T_CHARACTERS) return shortChecker.check(password, userInputs);
    // zxcvbn judges a repeat by its piece, with the checker's spellings: `jenn!fer1234` twice
    // had ten, scored 4 and passed (probe 78b F1). A piece said again adds next to nothing.
    // In any letter case: `Jenn!fer1234jenn!fer1234` and a second copy in capitals passed (78d P1).
    // The piece alone, with all the spellings, is then the only check: the whole guesses at least
    // as many (its piece's guesses times the copies, with fewer spellings), so it never came out
    // weaker (0 of 1,294 repeats of words, l33t words, numbers and random pieces), and judging
    // both held the event loop twice as long (probe 79a F1).
    const piece = repeatedPiece(password.toLowerCase());
    return piece === null
      ? longChecker.check(password, userInputs)
      : shortChecker.check(piece, userInputs);
  };

  /**
   * Names the first rule the password breaks and how to fix it; never echoes the password. The
   * rules read its skeleton (password-skeleton.ts), and its strength also as typed.
   */
  return function checkPassword(typed: string, email: string): PasswordVerdict {
    // A lone surrogate (a broken `\ud800` escape) would reach argon2 as U+FFFD, so distinct
    // passwords would collapse into one; U+FFFD itself is what a broken encoding leaves behind.
    if (!typed.isWellFormed() || typed.includes("\uFFFD")) {
      return {
        ok: false,
        rule: "invalid_characters",
        message:
          "The password has unpaired surrogates or U+FFFD, which cannot be stored faithfully.",
      };
    }
    // Judged as an attacker reads it (password-skeleton.ts); long enough as typed and as read,
    // whichever is shorter: NFKC makes one typed U+FDFA eighteen characters, and an invisible
    // character typed is none (probe 39b F2).
    const skeleton = passwordSkeleton(typed);
    const seen = seenCharacters(typed);
    if (!showsSomething(typed)) {
      return {
        ok: false,
        rule: "invalid_characters",
        message: "The password has no character that shows.",
      };
    }
    if (Math.min(characters(typed), characters(seen)) < policy.minLength) {
      return {
        ok: false,
        rule: "min_length",
        message: `Use at least ${policy.minLength} characters.`,
      };
    }
    // What is hashed: the NFKC spelling.
    if (characters(normalizedPassword(typed)) > policy.maxLength) {
      return {
        ok: false,
        rule: "max_length",
        message: `Use at most ${policy.maxLength} characters.`,
      };
    }
    const localPart = passwordSkeleton(email.slice(0, email.lastIndexOf("@"))).toLowerCase();
    if (localPart.length >= 3 && skeleton.toLowerCase().includes(localPart)) {
      return {
        ok: false,
        rule: "contains_email",
        message: "Do not use your email address in your password.",
      };
    }
    // And as typed, the weaker verdict kept: NFKC makes one typed U+FDFA eighteen characters of an
    // Arabic phrase, which scores as random; twelve of them typed are one character repeated
    // (probe 40b F1).
    // A spelling already too weak as read is the verdict: the one as typed could only be weaker
    // still, and its check is another of zxcvbn's longest passes (probe 79a F1).
    const asRead = strengthOf(skeleton, [email, localPart]);
    const visible = withoutUnseen(typed);
    const asTyped =
      visible === skeleton || asRead.score < policy.minScore
        ? asRead
        : strengthOf(visible, [email, localPart]);
    const result = asTyped.score < asRead.score ? asTyped : asRead;
    if (result.score < policy.minScore) {
      const hints = [result.feedback.warning, ...result.feedback.suggestions].filter(Boolean);
      return {
        ok: false,
        rule: "too_weak",
        message:
          `This password is too easy to guess (strength ${result.score} of 4, ${policy.minScore} needed). ${hints.join(" ")}`.trim(),
      };
    }
    return { ok: true };
  };
}

/** The hash of a password's NFKC spelling. */
export function hashPassword(password: string, hashing: PasswordHashing = {}): Promise<string> {
  return Bun.password.hash(normalizedPassword(password), { algorithm: "argon2id", ...hashing });
}

/**
 * Whether the password matches the hash: its NFKC spelling, or, only when that differs from the
 * spelling typed and does not match, the spelling typed, as hashes made before this release hold
 * it (`legacy`: the caller makes the hash again from the NFKC spelling). Whether the second check
 * runs depends on the password alone, never on the account, so timing tells nothing of it.
 */
export async function verifyPassword(
  password: string,
  hash: string,
): Promise<{ matches: boolean; legacy: boolean }> {
  const normalized = normalizedPassword(password);
  if (await Bun.password.verify(normalized, hash)) return { matches: true, legacy: false };
  if (normalized === password) return { matches: false, legacy: false };
  const legacy = await Bun.password.verify(password, hash);
  return { matches: legacy, legacy };
}
