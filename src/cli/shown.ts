/**
 * @module
 * An account's id and address as an operator command prints them: as the file holds them, however
 * they were written there.
 */
import { spellOut } from "../logging/spell-out";

/**
 * An account's id as the file holds it: a forged row's blob is shown as SQL writes one, `x'…'` (it
 * was printed as its bytes joined by commas, probe 80a), whatever else as its text.
 */
export const shownId = (id: unknown): string => (typeof id === "string" ? id : spellOut(id));

/** The longest address shown whole: RFC 5321's 254, with room; a longer one was written into the file. */
const SHOWN_ADDRESS_CHARACTERS = 320;

/**
 * An account's address as stored: a long one (written into the file) cut, saying how long it is,
 * and one that is no text spelt as the file holds it (probe 85d F6: 600 KB printed twice whole).
 */
export function shownAddress(address: unknown): string {
  if (typeof address !== "string") return spellOut(address);
  if (address.length <= SHOWN_ADDRESS_CHARACTERS) return address;
  return `${address.slice(0, SHOWN_ADDRESS_CHARACTERS)}… (${address.length} characters)`;
}
