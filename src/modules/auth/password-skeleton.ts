/**
 * @module
 * What the password policy judges: the password as an attacker reads it, not as typed
 * (look-alikes.ts: NFKC, what draws nothing dropped, homoglyphs read as Latin), and without the
 * accents Latin letters carry (`pássword1234` is `password1234` to a guesser; probe 40b F1). One
 * homoglyph or one invisible character in `password1234` made it look random to zxcvbn (probe 39b
 * F2). Only for judging: the password is hashed in its NFKC spelling.
 */
import { readAsLatin } from "../../look-alikes";

/** Combining marks left once a text is decomposed: the accents of accented letters. */
const MARKS = /\p{M}/gu;

/** The password as the policy judges its strength. */
export function passwordSkeleton(password: string): string {
  return readAsLatin(password).normalize("NFD").replace(MARKS, "");
}
