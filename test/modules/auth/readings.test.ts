/**
 * An address's reading (modules/auth/email.ts `readKey`): each look-alike in the list reads as
 * what it is drawn as, in either case, whatever the other entries are, so that a new address in
 * one script that copies a registered one is taken (lookalikes.test.ts tries that through the
 * API). Probe 91d F1: folding case before reading lost ten listed capitals (`Η`, listed as `H`,
 * folded to `η`, which reads `n`).
 */
import { expect, test } from "bun:test";
import { lookAlikeReadings, readAsLatin } from "../../../src/look-alikes";
import { foldCase, readKey } from "../../../src/modules/auth/email";

const entries = lookAlikeReadings();
const LETTER_OR_DIGIT = /^[\p{L}\p{N}]$/u;

test("a letter's reading is read to its end: reading it again changes nothing (probe 91i F1)", () => {
  const again = entries
    .map(([character]) => readAsLatin(character))
    .filter((read) => readAsLatin(read) !== read && read.normalize("NFD") === read);
  expect(again).toEqual([]);
});

test("every letter and digit in the list reads as what it is drawn as", () => {
  // A character NFKC changes is read as what NFKC makes it (ϲ as σ), never as itself.
  const read = entries.filter(
    ([character]) => LETTER_OR_DIGIT.test(character) && character.normalize("NFKC") === character,
  );
  expect(read.length).toBeGreaterThan(1_400);
  const readingOf = (text: string) => readKey(`${text}@example.com`);
  // Drawn as ASCII, it reads as that ASCII; drawn as another letter, as that letter reads.
  const wrong = read
    .map(([character, drawn]) => ({
      character,
      drawn: /^[\x21-\x7e]+$/.test(drawn) ? `${foldCase(drawn)}@example.com` : readingOf(drawn),
      read: readingOf(character),
    }))
    .filter((entry) => entry.read !== entry.drawn);
  expect(wrong).toEqual([]);
});

test("Unicode's confusables are read: digits, punctuation, capitals of every listed script (probe 91d F2)", () => {
  for (const [address, reading] of [
    ["окб", "ok6"],
    ["roomƷ", "room3"],
    ["okȣ", "ok8"],
    ["o\ua78cbrien", "o'brien"],
    ["ꓙꓳꓧꓠꓸꓓꓳꓰ", "john.doe"],
    ["ΤΗΕΟ", "theo"],
    ["ΗΑΝΝΑ", "hanna"],
    ["ՏՕՏ", "sos"],
    ["ԌОԌ", "gog"],
    ["ⲂⲞⲂ", "bob"],
    ["\u13a1\u13c2\u13a5", "rhi"], // Cherokee Ꭱ Ꮒ Ꭵ
  ] as const) {
    expect({ address, read: readKey(`${address}@example.com`) }).toEqual({
      address,
      read: `${reading}@example.com`,
    });
  }
});

test("letters whose prototype is no ASCII, and marks Unicode reads as others, read alike: one UTS #39 skeleton, one reading (probes 91f F2, 91h F2)", () => {
  for (const [latin, other] of [
    ["çelik", "ҫеӏік"], // Latin ç, Cyrillic ҫ: both c̦
    ["əcem", "әсем"], // Latin and Cyrillic schwa
    ["ħoo", "ћоо"], // Maltese ħ, Serbian ћ
    ["kaʒ", "каӡ"], // ezh
    ["θεο", "өео"], // Greek θ, Cyrillic ө
    ["φοο", "фоо"],
    ["ǧul", "ğul"], // caron, breve
    ["ǎna", "ăna"],
    ["ştefan", "ștefan"], // cedilla, comma below (probe 91h F2)
    ["mureşan", "mureșan"],
    ["âdam", "ȃdam"], // circumflex, inverted breve
    ["straße", "straꞵe"], // ß, and ꞵ which Unicode draws as it (probe 91j F1)
  ] as const) {
    expect({ latin, other, read: readKey(`${other}@example.com`) }).toEqual({
      latin,
      other,
      read: readKey(`${latin}@example.com`),
    });
  }
  // Names that differ to a reader still read apart.
  for (const [one, another] of [
    ["maria", "marta"],
    ["sơn", "so'n"], // probe 91h F5: `ơ` was read as `o'`
    ["nguyễn", "nguyen"],
    ["şahin", "sahin"],
    ["müller", "muller"],
    ["søren", "soren"],
  ] as const) {
    expect(readKey(`${one}@example.com`)).not.toBe(readKey(`${another}@example.com`));
  }
});

test("the pairs of probe 91d read alike", () => {
  for (const [address, reading] of [["окб", "ok6"]] as const) {
    expect({ address, read: readKey(`${address}@example.com`) }).toEqual({
      address,
      read: `${reading}@example.com`,
    });
  }
});
