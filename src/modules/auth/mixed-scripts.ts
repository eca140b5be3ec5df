/**
 * @module
 * Which scripts a text's letters are written in, for the one rule a new account's address follows
 * (email.ts): Latin's letters are copied by many scripts (look-alikes.ts), so a local part mixing
 * scripts (`аdmin`, its first letter Cyrillic; `ⲣaypal`, Coptic) reads as an address it is not, in
 * `users:list`, a key's owner and the audit log (probes 90b F2, 90h F1). A new one may hold letters
 * of one script only, as UTS #39's "highly restrictive" level says, or Latin with the scripts
 * Chinese, Japanese and Korean write beside it. JavaScript names a letter's script only through
 * Unicode property escapes, so each is tried in turn (a local part is at most 64 characters).
 */

/** Unicode's scripts, by the names property escapes take; a newer one's letters are "unlisted". */
// biome-ignore format: one name a line would be 160 lines
const SCRIPT_NAMES = [
  "Latin", "Greek", "Cyrillic", "Armenian", "Hebrew", "Arabic", "Syriac", "Thaana", "Devanagari",
  "Bengali", "Gurmukhi", "Gujarati", "Oriya", "Tamil", "Telugu", "Kannada", "Malayalam", "Sinhala",
  "Thai", "Lao", "Tibetan", "Myanmar", "Georgian", "Hangul", "Ethiopic", "Cherokee",
  "Canadian_Aboriginal", "Ogham", "Runic", "Khmer", "Mongolian", "Hiragana", "Katakana",
  "Bopomofo", "Han", "Yi", "Old_Italic", "Gothic", "Deseret", "Tagalog", "Hanunoo", "Buhid",
  "Tagbanwa", "Limbu", "Tai_Le", "Linear_B", "Ugaritic", "Shavian", "Osmanya", "Cypriot",
  "Braille", "Buginese", "Coptic", "New_Tai_Lue", "Glagolitic", "Tifinagh", "Syloti_Nagri",
  "Old_Persian", "Kharoshthi", "Balinese", "Cuneiform", "Phoenician", "Phags_Pa", "Nko",
  "Sundanese", "Lepcha", "Ol_Chiki", "Vai", "Saurashtra", "Kayah_Li", "Rejang", "Lycian", "Carian",
  "Lydian", "Cham", "Tai_Tham", "Tai_Viet", "Avestan", "Egyptian_Hieroglyphs", "Samaritan", "Lisu",
  "Bamum", "Javanese", "Meetei_Mayek", "Imperial_Aramaic", "Old_South_Arabian",
  "Inscriptional_Parthian", "Inscriptional_Pahlavi", "Old_Turkic", "Kaithi", "Batak", "Brahmi",
  "Mandaic", "Chakma", "Meroitic_Cursive", "Meroitic_Hieroglyphs", "Miao", "Sharada",
  "Sora_Sompeng", "Takri", "Caucasian_Albanian", "Bassa_Vah", "Duployan", "Elbasan", "Grantha",
  "Pahawh_Hmong", "Khojki", "Linear_A", "Mahajani", "Manichaean", "Mende_Kikakui", "Modi", "Mro",
  "Old_North_Arabian", "Nabataean", "Palmyrene", "Pau_Cin_Hau", "Old_Permic", "Psalter_Pahlavi",
  "Siddham", "Khudawadi", "Tirhuta", "Warang_Citi", "Ahom", "Anatolian_Hieroglyphs", "Hatran",
  "Multani", "Old_Hungarian", "SignWriting", "Adlam", "Bhaiksuki", "Marchen", "Newa", "Osage",
  "Tangut", "Masaram_Gondi", "Nushu", "Soyombo", "Zanabazar_Square", "Dogra", "Gunjala_Gondi",
  "Makasar", "Medefaidrin", "Hanifi_Rohingya", "Sogdian", "Old_Sogdian", "Elymaic", "Nandinagari",
  "Nyiakeng_Puachue_Hmong", "Wancho", "Chorasmian", "Dives_Akuru", "Khitan_Small_Script", "Yezidi",
  "Cypro_Minoan", "Old_Uyghur", "Tangsa", "Toto", "Vithkuqi", "Kawi", "Nag_Mundari",
];
const SCRIPTS = SCRIPT_NAMES.map(
  (name) => [name, new RegExp(`^\\p{Script=${name}}$`, "u")] as const,
);
const NO_SCRIPT = /^[\p{Script=Common}\p{Script=Inherited}]$/u;
const WITH_LATIN: readonly ReadonlySet<string>[] = [
  new Set(["Latin", "Han", "Hiragana", "Katakana"]),
  new Set(["Latin", "Han", "Bopomofo"]),
  new Set(["Latin", "Han", "Hangul"]),
];

/** Whether a normalised address's local part mixes scripts a new address may not (see above). */
export function mixesScripts(email: string): boolean {
  const local = email.slice(0, email.lastIndexOf("@"));
  const scripts = new Set<string>();
  // Digits too: a Myanmar zero in `j၀e` is Myanmar's, as UTS #39 counts it (probe 90j F1).
  for (const letter of local.match(/[\p{L}\p{N}]/gu) ?? []) {
    if (NO_SCRIPT.test(letter)) continue;
    scripts.add(SCRIPTS.find(([, script]) => script.test(letter))?.[0] ?? "unlisted");
  }
  if (scripts.size <= 1) return false;
  return !WITH_LATIN.some((allowed) => [...scripts].every((script) => allowed.has(script)));
}
