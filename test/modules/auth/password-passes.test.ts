/**
 * How many of zxcvbn's passes one registration's password check makes: each runs on the event loop
 * (tens of milliseconds for a l33t-dense 20-character piece), so the check is bounded by counting
 * them, never by a timed assertion. Probe 79a F1: a 256-character repeat of a l33t piece with an
 * accent took four passes and held `/health` 120–490 ms.
 */
import { describe, expect, test } from "bun:test";
import {
  createPasswordChecker,
  loadPasswordStrength,
  type PasswordStrengthModules,
} from "../../../src/modules/auth/passwords";

const PRODUCTION = { minLength: 12, maxLength: 256, minScore: 3 };
const EMAIL = "someone@example.com";

/** The real zxcvbn, each check it makes counted with the password it was given. */
async function countedChecker() {
  const checked: string[] = [];
  const [core, common, english] = await loadPasswordStrength();
  class CountedFactory extends core.ZxcvbnFactory {
    override check(password: string, userInputs?: (string | number)[]) {
      checked.push(password);
      return super.check(password, userInputs);
    }
  }
  const load = async (): Promise<PasswordStrengthModules> => [
    { ...core, ZxcvbnFactory: CountedFactory },
    common,
    english,
  ];
  const check = await createPasswordChecker(PRODUCTION, load);
  return {
    passes(password: string) {
      checked.length = 0;
      const verdict = check(password, EMAIL);
      return { verdict, passes: [...checked] };
    },
  };
}

describe("zxcvbn passes per password", () => {
  test("a long repeat of a l33t piece with an accent: two passes (its piece as read and as typed), not four", async () => {
    const { passes } = await countedChecker();
    const password = "@1!|0$345|+@1!|0$3é!".repeat(13).slice(0, 256);
    const { verdict, passes: made } = passes(password);
    expect(verdict.ok).toBe(true);
    expect(made).toEqual(["@1!|0$345|+@1!|0$3e!", "@1!|0$345|+@1!|0$3é!"]);
  });

  test("a repeat is judged by its piece alone, and a weak piece refuses it", async () => {
    const { passes } = await countedChecker();
    const { verdict, passes: made } = passes("Jenn!fer1234JENN!FER1234");
    expect(verdict).toMatchObject({ ok: false, rule: "too_weak" });
    expect(made).toEqual(["jenn!fer1234"]);
  });

  test("too weak as read: the typed spelling is not judged again", async () => {
    const { passes } = await countedChecker();
    // A Cyrillic `а`: the typed spelling differs from the skeleton, which is already weak.
    const { verdict, passes: made } = passes("pаssword1234");
    expect(verdict).toMatchObject({ ok: false, rule: "too_weak" });
    expect(made).toEqual(["password1234"]);
  });

  test("strong as read with another typed spelling: both judged; a long password with no short repeat: one pass", async () => {
    const { passes } = await countedChecker();
    // Cyrillic letters in sequence read as Latin look-alikes (random as read) but are a sequence
    // of code points as typed: each spelling gets its pass.
    const { passes: made } = passes("Zq7#абвгдеёжзий-9Xk");
    expect(made.length).toBe(2);
    const long = passes("vK3#pQ9!wL2@zR8$tY6%uM4^".repeat(3));
    expect(long.verdict.ok).toBe(true);
    expect(long.passes.length).toBe(1);
  });
});
