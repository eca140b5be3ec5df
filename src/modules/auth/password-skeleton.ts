/**
 * @module
 * What the password policy judges: the password as an attacker reads it, not as typed. NFKC
 * folds compatibility spellings (fullwidth, mathematical letters, ligatures); then what draws
 * nothing is dropped (default-ignorable and format characters: zero-width spaces and joiners, soft
 * hyphens, variation selectors, tags), and letters that only look Latin are read as the Latin
 * letter they look like (Cyrillic and Greek homoglyphs, small capitals). One homoglyph or one
 * invisible character in `password1234` made it look random to zxcvbn (probe 39b F2); an attacker
 * undoes each as cheaply as NFKC. Only for judging: the password is hashed in its NFKC spelling.
 */

/** What draws nothing, kept out of the skeleton. */
const UNSEEN = /[\p{Default_Ignorable_Code_Point}\p{Cf}]/gu;

/**
 * Letters read as the Latin letter they look like, by the table in UTS #39's spirit (confusables),
 * kept to the scripts and forms a keyboard or an IME types: Cyrillic, Greek, small capitals.
 */
const LOOKS_LATIN: Readonly<Record<string, string>> = {
  // Cyrillic
  а: "a",
  в: "b",
  е: "e",
  ё: "e",
  з: "3",
  і: "i",
  ї: "i",
  ј: "j",
  к: "k",
  м: "m",
  н: "h",
  о: "o",
  п: "n",
  р: "p",
  с: "c",
  т: "t",
  у: "y",
  х: "x",
  ѕ: "s",
  ԁ: "d",
  ԛ: "q",
  ԝ: "w",
  һ: "h",
  ӏ: "l",
  ь: "b",
  г: "r",
  ү: "y",
  А: "A",
  В: "B",
  Е: "E",
  Ё: "E",
  З: "3",
  І: "I",
  Ї: "I",
  Ј: "J",
  К: "K",
  М: "M",
  Н: "H",
  О: "O",
  Р: "P",
  С: "C",
  Т: "T",
  У: "Y",
  Х: "X",
  Ѕ: "S",
  Ү: "Y",
  Ԁ: "D",
  Ԛ: "Q",
  Ԝ: "W",
  Һ: "H",
  Ӏ: "I",
  // Greek
  α: "a",
  β: "b",
  γ: "y",
  ε: "e",
  ι: "i",
  κ: "k",
  ν: "v",
  ο: "o",
  ρ: "p",
  τ: "t",
  υ: "u",
  χ: "x",
  ω: "w",
  Α: "A",
  Β: "B",
  Ε: "E",
  Ζ: "Z",
  Η: "H",
  Ι: "I",
  Κ: "K",
  Μ: "M",
  Ν: "N",
  Ο: "O",
  Ρ: "P",
  Τ: "T",
  Υ: "Y",
  Χ: "X",
  // Small capitals and other Latin letters drawn as a plain one
  ᴀ: "a",
  ʙ: "b",
  ᴄ: "c",
  ᴅ: "d",
  ᴇ: "e",
  ꜰ: "f",
  ɢ: "g",
  ʜ: "h",
  ɪ: "i",
  ᴊ: "j",
  ᴋ: "k",
  ʟ: "l",
  ᴍ: "m",
  ɴ: "n",
  ᴏ: "o",
  ᴘ: "p",
  ǫ: "q",
  ʀ: "r",
  ꜱ: "s",
  ᴛ: "t",
  ᴜ: "u",
  ᴠ: "v",
  ᴡ: "w",
  ʏ: "y",
  ᴢ: "z",
  ı: "i",
  ȷ: "j",
  ɑ: "a",
  ɡ: "g",
  ɩ: "i",
  ʋ: "u",
};

/** The password as the policy judges it (see the module's header). */
export function passwordSkeleton(password: string): string {
  let skeleton = "";
  for (const character of password.normalize("NFKC").replace(UNSEEN, "")) {
    skeleton += LOOKS_LATIN[character] ?? character;
  }
  return skeleton;
}
