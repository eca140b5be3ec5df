/**
 * @module
 * The one secret scrubber, shared by the logs (logger.ts, the access log) and error reporting
 * (plugins/sentry/scrub.ts). `createTextScrubber(secrets, replacement)` returns a function that
 * replaces, in any string:
 *
 * - every configured secret value in each spelling it can arrive in: raw, JSON-escaped,
 *   percent-encoded (`encodeURIComponent`, upper- or lower-case hex, and any mix of encoded and
 *   raw characters, a space also as `+`, as any encoder writes it), form-encoded (space as `+`)
 *   the secret's own text with `+/` as `-_` (padding dropped), and the secret encoded as base64
 *   or base64url, on its own or inside a larger encoded value;
 * - every API key shape (`pal_…`), JWT shape (`eyJ….….…`), `Bearer` and `Basic` credential,
 *   including their URL spellings (`Bearer%20…`, `Bearer+…`);
 * - the value of every query-style parameter whose name says credential (`password=`, `token=`,
 *   `refresh_token=`, `secret=`, `key=`, `api_key=`, `signature=` …), to its end (see
 *   CREDENTIAL_PARAMETER). The logger passes `{ json: true }`: its texts are whole JSON lines.
 *
 * `scrubUrlPart` is for text that came from a URL (a path, a query string): a credential
 * parameter's value is delimited in the raw text (an encoded `&`, `#` or line break is part of it)
 * and redacted whole; the text is then also decoded, but for those escapes, so a secret spelled
 * with only some characters percent-encoded is found; when one is, the decoded and scrubbed text
 * is returned.
 *
 * Scrub before cutting: a secret cut in two is no longer recognised (logSafe cuts; callers scrub
 * first).
 */

import { readAsLatin } from "../look-alikes";

/**
 * API keys (`pal_live_…`, `pal_test_…`) and refresh tokens (`pal_rt_…`) wherever they start
 * (glued to other text too), and any other `pal_…` token at a word boundary (so `principal_id` is
 * left alone).
 */
const API_KEY = /pal_(?:live|test|rt)_[A-Za-z0-9_-]*|\bpal_[A-Za-z0-9_-]+/g;
/**
 * The upstreams' own key shapes, which a client may paste where it does not belong: Stripe's
 * secret, restricted and webhook signing keys (`sk_live_…`, `rk_test_…`, `whsec_…`) and OpenAI's
 * (`sk-…`, `sk-proj-…`), each at a word boundary (probe 30b F4). A Stripe key glued after other
 * text (`xsk_live_…`) is found once 20 letters and digits, a digit among them, follow its
 * prefix, as every real one has (a word such as `risk_live_data`, or `desk_live_` and a long word,
 * has not); a signing secret once 16 letters and digits follow `whsec_` (Stripe's are base62 or
 * hex), so a path segment merely named `whsec_x` does not take the rest of the path with it
 * (probes 30c F5, 31b F5). The configured ones are found in every spelling by the secrets' own
 * search; these are any others.
 */
const UPSTREAM_KEY =
  /\b(?:[sr]k_(?:live|test)_[A-Za-z0-9]+|sk-[A-Za-z0-9_-]{20,})|[sr]k_(?:live|test)_(?=[A-Za-z]*[0-9])[A-Za-z0-9]{20,}|whsec_[A-Za-z0-9]{16,}/g;
/**
 * A JWT: base64url header starting `{"` (`eyJ`), payload and signature; glued to text too. Found
 * in each run of base64url characters and dots (DOTTED_RUN) by redactJwts, not by one pattern: a
 * pattern starting at every `eyJ` scans to the run's end from each of them, quadratic in a run of
 * `eyJeyJ…` with no dot (90 ms for 15 KB, a user agent's size).
 */
const DOTTED_RUN = /[A-Za-z0-9_.-]+/g;

/**
 * The run with each JWT replaced, as `eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*` would
 * replace them (leftmost first), in one pass over its dot-separated segments.
 */
function redactJwts(run: string, replacement: string): string {
  if (!run.includes("eyJ") || !run.includes(".")) return run;
  const segments = run.split(".");
  const parts: string[] = [];
  for (let k = 0; k < segments.length; ) {
    const segment = segments[k]!;
    const start = segment.indexOf("eyJ");
    // The header in this segment, a non-empty payload after it, and a signature segment after that.
    if (start >= 0 && k + 2 < segments.length && segments[k + 1]!.length > 0) {
      parts.push(segment.slice(0, start) + replacement);
      k += 3;
    } else {
      parts.push(segment);
      k += 1;
    }
  }
  return parts.join(".");
}
/** `Bearer x` as a header writes it or a URL encodes it (`Bearer%20x`, `Bearer+x`). */
const BEARER = /\bBearer(?:\s|%20|\+)+[A-Za-z0-9._~+/=%-]+/gi;
/** `Basic x`, in any header (the word is capitalised; prose "basic auth" is left alone). */
const BASIC = /\bBasic(?:\s|%20|\+)+[A-Za-z0-9+/%]{8,}=*/g;
/**
 * `name=value` where the name says credential: query strings, form bodies, messages. A name holds
 * one of the words below anywhere (`user_pwd`, `client_secret`, `access_key`, `x-auth`); `pw` only
 * as the whole name (as a part it is in ordinary words). A name also starts after an encoded `&`,
 * `#` or line break, which scrubUrlPart leaves encoded (`a%26token=`). Where the
 * value ends errs towards redacting too much, since a passphrase may hold spaces and quotes: at
 * `&` or `#` (the next URL parameter or the fragment), at a line break, or at the end of the text
 * — and, in a serialised JSON line, at the unescaped `"` that closes the string (an escape such
 * as `\"` is part of the value; the closing quote is never eaten, so the line stays JSON). The
 * name is one run of name characters that holds a word (a lookahead), not a word between two
 * runs: a long run of words with no `=` after it is then given up in linear time, not quadratic.
 */
const CREDENTIAL_NAME =
  /((?:^|[?&;/\s"']|%(?:26|23|0a|0d))(?:(?=[A-Za-z0-9_.-]*?(?:pass(?:word|wd|phrase)?|pwd|secret|token|key|signature|sig|auth|credential|creds|jwt|session|code))[A-Za-z0-9_.-]+|pw)=)/
    .source;
const CREDENTIAL_PARAMETER = new RegExp(String.raw`${CREDENTIAL_NAME}[^&#\r\n]*`, "gi");
/** In JSON text: an escape pair is part of the value; `\n`, `\r` and an unescaped `"` end it. */
const CREDENTIAL_PARAMETER_IN_JSON = new RegExp(
  String.raw`${CREDENTIAL_NAME}(?:\\[^nr]|[^&#"\\\r\n])*`,
  "gi",
);

/** What every pattern below (and a percent-encoded secret) needs somewhere in the text. */
const MAY_HOLD_CREDENTIAL = /pal_|eyJ|bearer|Basic|=|%|k_live_|k_test_|whsec_|sk-/i;
const MAY_HOLD_UPSTREAM_KEY = /k_live_|k_test_|whsec_|sk-/;

/** A character under 256 as one percent-encoded byte, upper-case hex. */
const hexOf = (char: string) =>
  `%${char.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`;

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

/** The spellings of one configured secret we look for. */
export function secretSpellings(secret: string): string[] {
  const encoded = encodeURIComponent(secret);
  const base64url = secret.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const forms = [
    secret,
    encoded,
    encoded.replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()),
    encoded.replace(/%20/g, "+"),
    base64url,
    ...base64Encodings(secret),
    // Inside a JSON document a client encoded: its quotes and backslashes escaped.
    ...base64Encodings(JSON.stringify(secret).slice(1, -1)),
    // A header's UTF-8 bytes as Bun reads them (Latin-1), and a path's `\` as URL parsing makes it.
    Buffer.from(secret).toString("latin1"),
    secret.replace(/\\/g, "/"),
    // Each character under 256 percent-encoded as one Latin-1 byte (JavaScript's `escape`).
    [...secret].map((char) => (char.charCodeAt(0) < 256 ? hexOf(char) : char)).join(""),
  ];
  // As they appear inside a JSON string (a log line is JSON).
  for (const form of [...forms]) forms.push(JSON.stringify(form).slice(1, -1));
  return [...new Set(forms)].filter((form) => form.length >= Math.min(8, secret.length));
}

/**
 * The secret encoded as base64 and base64url, wherever it starts in what is encoded: on its own,
 * or inside a larger value (`user:secret` in a Basic credential, a JSON document a client encoded).
 * Each of the three byte alignments encodes it differently; of each, the characters that only the
 * secret's bytes decide.
 */
function base64Encodings(secret: string): string[] {
  const bytes = Buffer.from(secret);
  const forms: string[] = [];
  for (let before = 0; before < 3; before++) {
    const encoded = Buffer.concat([Buffer.alloc(before), bytes]).toString("base64");
    const start = Math.ceil((before * 8) / 6);
    const end = Math.floor(((before + bytes.length) * 8) / 6);
    const own = encoded.slice(start, end);
    // Also as a form decoder leaves it: `+` read as a space.
    forms.push(own, own.replace(/\+/g, "-").replace(/\//g, "_"), own.replace(/\+/g, " "));
  }
  return forms;
}

/**
 * The base64 encodings of the secrets whose `+` or `/` a URL or header encoder percent-encoded
 * (`%2B`, `%2F`, either hex case), each character either way.
 */
function encodedBase64Patterns(secrets: readonly string[]): RegExp[] {
  return [...new Set(secrets.flatMap(base64Encodings))]
    .filter((form) => /[+/]/.test(form) && form.length >= 8)
    .map(
      (form) =>
        new RegExp(
          [...form]
            .map((char) =>
              char === "+" ? "(?:\\+|%2[Bb])" : char === "/" ? "(?:/|%2[Ff])" : escapeRegExp(char),
            )
            .join(""),
          "g",
        ),
    );
}

export type TextScrubber = (text: string) => string;

/**
 * Matches the secret with any of its characters percent-encoded (either hex case), a space also
 * as `+`, or, in a JSON string, escaped, in any mix: encoders differ in what they leave raw
 * (`encodeURIComponent` keeps `!'()*~`, Python's `quote_plus`, Go's `QueryEscape` and HTML forms
 * encode some of them and write a space as `+`), and a client may encode only what a URL cannot
 * carry raw.
 */
function mixedSpelling(secret: string, json: boolean): RegExp {
  const hexAnyCase = (encoded: string) =>
    encoded.replace(/[0-9A-F]/g, (c) => (/[A-F]/.test(c) ? `[${c}${c.toLowerCase()}]` : c));
  const parts = [...secret].map((char) => {
    const escaped = JSON.stringify(char).slice(1, -1);
    // A raw `"` or `\\` cannot stand inside a JSON string: matching one would cut the line.
    const forms = new Set(
      json && escaped !== char
        ? [escapeRegExp(escaped)]
        : [escapeRegExp(char), escapeRegExp(escaped)],
    );
    const encoded = encodeURIComponent(char);
    if (encoded !== char) forms.add(hexAnyCase(encoded));
    if (char === " ") forms.add("\\+");
    // Any character may be percent-encoded, even one that need not be.
    forms.add(
      hexAnyCase(
        [...new TextEncoder().encode(char)]
          .map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, "0")}`)
          .join(""),
      ),
    );
    return forms.size === 1 ? [...forms][0]! : `(?:${[...forms].join("|")})`;
  });
  return new RegExp(parts.join(""), "g");
}

/** Whether `text` can stand, as it is, between the quotes of a JSON string. */
function isJsonStringContent(text: string): boolean {
  try {
    JSON.parse(`"${text}"`);
    return true;
  } catch {
    return false;
  }
}

export interface TextScrubberOptions {
  /**
   * The texts are whole serialised JSON lines (the logger's): a credential parameter's value ends
   * at the string's closing quote, and no spelling of a secret with a raw `"` or `\\` (which
   * cannot stand inside a JSON string) is looked for, so a replacement never breaks the line.
   * @default false (the texts are values before they are serialised: a `"` is part of a value)
   */
  json?: boolean;
}

export function createTextScrubber(
  secretValues: readonly string[],
  replacement: string,
  { json = false }: TextScrubberOptions = {},
): TextScrubber {
  const credentialParameter = json ? CREDENTIAL_PARAMETER_IN_JSON : CREDENTIAL_PARAMETER;
  // Longest first, so a secret that contains another is replaced whole.
  const forms = [
    ...new Set(secretValues.filter((value) => value.length > 0).flatMap(secretSpellings)),
  ]
    .filter((form) => !json || isJsonStringContent(form))
    .sort((a, b) => b.length - a.length);
  // Built at the first text with a `%` (or a `+`, for a secret with a space) in it, not at start:
  // three scrubbers are made per app (logger, access log, request id) and these patterns cost
  // ~1 ms each, for a rare case.
  const mixedSecrets = [...new Set(secretValues.filter((value) => value.length >= 8))].sort(
    (a, b) => b.length - a.length,
  );
  let mixed: RegExp[] | null = null;
  const mixedPatterns = () =>
    (mixed ??= [
      ...mixedSecrets.map((secret) => mixedSpelling(secret, json)),
      ...encodedBase64Patterns(mixedSecrets),
    ]);
  // Without a `%`, a spelling other than the fixed ones can only be a space written as `+`.
  const plusForSpace = mixedSecrets.some((secret) => secret.includes(" "));
  // A secret in another case (upper-cased by a client or a tool) leaves one bit a letter to guess:
  // its text, JSON-escaped and URL-encoded spellings are also looked for in any case (probe 30b F3).
  const foldable = [
    ...new Set(
      mixedSecrets.flatMap((secret) => [
        secret,
        JSON.stringify(secret).slice(1, -1),
        encodeURIComponent(secret),
      ]),
    ),
  ]
    .filter((form) => !json || isJsonStringContent(form))
    .sort((a, b) => b.length - a.length);
  const folded = foldable.map((form) => form.toLowerCase());
  let anyCase: RegExp | null = null;
  const anyCasePattern = () => (anyCase ??= new RegExp(foldable.map(escapeRegExp).join("|"), "gi"));
  /** The configured secrets alone, in every spelling: no credential shape (see scrubText). */
  const secretsOnce = (text: string) => {
    let out = text;
    for (const form of forms) if (out.includes(form)) out = out.replaceAll(form, replacement);
    if (out.includes("%") || (plusForSpace && out.includes("+"))) {
      for (const pattern of mixedPatterns()) out = out.replace(pattern, replacement);
    }
    if (folded.length > 0) {
      const lower = out.toLowerCase();
      if (folded.some((form) => lower.includes(form)))
        out = out.replace(anyCasePattern(), replacement);
    }
    return out;
  };
  /** The secrets, then every credential shape. */
  const scrubOnce = (text: string) => {
    let out = secretsOnce(text);
    // One scan first: most lines hold none of what the shapes need (each shape's mark is in it).
    if (!MAY_HOLD_CREDENTIAL.test(out)) return out;
    if (out.includes("pal_")) out = out.replace(API_KEY, replacement);
    if (MAY_HOLD_UPSTREAM_KEY.test(out)) out = out.replace(UPSTREAM_KEY, replacement);
    if (out.includes("eyJ")) out = out.replace(DOTTED_RUN, (run) => redactJwts(run, replacement));
    if (/bearer/i.test(out)) out = out.replace(BEARER, replacement);
    if (out.includes("Basic")) out = out.replace(BASIC, replacement);
    if (out.includes("=")) out = out.replace(credentialParameter, `$1${replacement}`);
    return out;
  };
  /**
   * The text with each configured secret replaced wherever a decoding of it holds one: decoded as
   * far as the last secret found (each round's secrets replaced), no further; else as it came.
   */
  const secretsInEveryDecoding = (text: string) =>
    json || !text.includes("%") ? text : deepestChange(text, secretsOnce);
  /**
   * Applies `scrub` to the text and to each of up to MAX_DECODES decodings of it, each decoding made
   * from the round before it already scrubbed, and returns the round of the last change: decoded
   * only as far as something was found, and the text as it came when nothing was.
   */
  const deepestChange = (text: string, scrub: (text: string) => string) => {
    let result = text;
    let current = text;
    for (let round = 0; round <= MAX_DECODES; round++) {
      const scrubbed = scrub(current);
      if (scrubbed !== current) result = scrubbed;
      if (round === MAX_DECODES) break;
      const next = decodeKeepingDelimiters(scrubbed);
      if (next === scrubbed) break;
      current = next;
    }
    return result;
  };
  return function scrubText(text) {
    const out = scrubOnce(secretsInEveryDecoding(text));
    // Client text (not a whole JSON line, whose escapes decoding would break) may hold a secret
    // percent-encoded more than once (a header value a client encoded twice, a path three times):
    // when any of up to MAX_DECODES decodings holds one, the text is returned decoded that far and
    // scrubbed at every round, so no spelling of it survives; otherwise as it came.
    if (json || !out.includes("%")) return out;
    // Every round is decoded and scrubbed, each from the one before it already scrubbed: what one
    // round finds (a credential parameter, say) must not stop the search of the rounds after it.
    // The secrets were looked for in every decoding first (secretsInEveryDecoding): a credential
    // shape glued to a still-encoded secret (`pal_live_` + its alphanumeric start) would otherwise
    // take part of it, and what is left of it would no longer be recognised.
    return deepestChange(out, scrubOnce);
  };
}

/** How many times client text is percent-decoded in search of a secret. */
const MAX_DECODES = 4;

/** The escape of what ends a credential parameter's value: `&`, `#`, CR, LF. */
const DELIMITER_ESCAPE = /%(?:2[36]|0[ad])/i;
/** A run of escapes, none of them of what ends a credential parameter's value (`&`, `#`, CR, LF). */
const ESCAPE_RUN = /(?:%(?!2[36]|0[AaDd])[0-9A-Fa-f]{2})+/g;

function tryDecode(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

/**
 * Decodes every escape except those of `&`, `#`, CR and LF: decoded, they would end a credential
 * parameter's value early and leave the rest of it in clear (`password=v%26more`). A run that is
 * not valid UTF-8 is left as it is.
 */
function decodeKeepingDelimiters(text: string): string {
  // The common case (no such escape, valid UTF-8) in one native call.
  const whole = DELIMITER_ESCAPE.test(text) ? null : tryDecode(text);
  return whole ?? text.replace(ESCAPE_RUN, decodeRun);
}

/**
 * The bytes of the UTF-8 sequence that starts at `at`, when it is one (RFC 3629's table: the
 * second byte's range depends on the lead, so no overlong form, surrogate or code point past
 * U+10FFFF passes); 0 otherwise. What passes, decodeURIComponent decodes without throwing, and a
 * throw costs microseconds: `%ED%A0%80` (a surrogate) and `%E0%80%80` (overlong) passed a check of
 * the continuation bytes alone and threw, 17 ms a request for a User-Agent of them (probe 77b F2).
 */
function sequenceLength(bytes: Uint8Array, at: number): number {
  const lead = bytes[at]!;
  if (lead < 0x80) return 1;
  const length = lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3 : 4;
  if (lead < 0xc2 || lead > 0xf4 || at + length > bytes.length) return 0;
  const second = bytes[at + 1]!;
  const secondLow = lead === 0xe0 ? 0xa0 : lead === 0xf0 ? 0x90 : 0x80;
  const secondHigh = lead === 0xed ? 0x9f : lead === 0xf4 ? 0x8f : 0xbf;
  if (second < secondLow || second > secondHigh) return 0;
  for (let next = at + 2; next < at + length; next++) {
    const byte = bytes[next]!;
    if (byte < 0x80 || byte > 0xbf) return 0;
  }
  return length;
}

/**
 * A run of escapes decoded: whole when it is UTF-8 throughout, else sequence by sequence. Each
 * sequence RFC 3629's table passes is decoded here from its bytes, without `decodeURIComponent`
 * or a string per escape: a 4 KB path of `%FF%41` cost 3.5–6.5 ms to log, and paths refused
 * before the rate limit (a blocked address, `/health`) are logged as sent (probe 79a F2).
 */
function decodeRun(run: string): string {
  const bytes = bytesOf(run);
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const length = sequenceLength(bytes, i);
    if (length === 0) {
      // Not a UTF-8 sequence's start: left as it was sent, one escape.
      out += run.slice(i * 3, i * 3 + 3);
      i += 1;
      continue;
    }
    out += String.fromCodePoint(codePointOf(bytes, i, length));
    i += length;
  }
  return out;
}

/** The code point of the UTF-8 sequence of `length` bytes at `at` (sequenceLength passed it). */
function codePointOf(bytes: Uint8Array, at: number, length: number): number {
  const lead = bytes[at]!;
  if (length === 1) return lead;
  let point = lead & (length === 2 ? 0x1f : length === 3 ? 0x0f : 0x07);
  for (let next = at + 1; next < at + length; next++) point = (point << 6) | (bytes[next]! & 0x3f);
  return point;
}

/** The bytes of a run of escapes (`%XX` each: ESCAPE_RUN matched it). */
function bytesOf(run: string): Uint8Array {
  const bytes = new Uint8Array(Math.floor(run.length / 3));
  for (let i = 0; i < bytes.length; i++) {
    bytes[i] = (hexValue(run.charCodeAt(i * 3 + 1)) << 4) | hexValue(run.charCodeAt(i * 3 + 2));
  }
  return bytes;
}

/** A hexadecimal digit's value (the run holds only those after each `%`). */
function hexValue(code: number): number {
  return code <= 0x39 ? code - 0x30 : (code | 0x20) - 0x57;
}

/**
 * Scrubs text that came from a URL. A credential parameter's value is delimited in the raw text
 * (an encoded `&` or `#` belongs to the value) and redacted whole, whatever it decodes to. The
 * scrubbed text is then also decoded (as a path, and as a form with `+` for space), escapes of
 * delimiters kept: a secret found only in a decoded spelling means the decoded, scrubbed text is
 * returned instead, so no spelling of it survives.
 */
export function scrubUrlPart(text: string, scrub: TextScrubber): string {
  const scrubbed = scrub(text);
  if (scrubbed.includes("%") || scrubbed.includes("+")) {
    const candidates = scrubbed.includes("+")
      ? [scrubbed, scrubbed.replace(/\+/g, " ")]
      : [scrubbed];
    for (const decoded of candidates.map(decodeKeepingDelimiters)) {
      if (decoded === scrubbed) continue;
      const again = scrub(decoded);
      if (again !== decoded) return again;
    }
  }
  return scrubbed;
}

/**
 * scrubUrlPart, also finding a secret written in a spelling that reads the same (look-alikes.ts):
 * fullwidth, with a character that draws nothing inside (a zero-width space or soft hyphen, which
 * wiki and rich-text copies insert), or with a Cyrillic or Greek letter for a Latin one. When only
 * that spelling holds one, it is returned scrubbed, so no spelling of the secret is kept (probes
 * 39b F6, 40b F2: a key's name and a block's reason are stored).
 */
export function scrubAnySpelling(text: string, scrub: TextScrubber): string {
  const scrubbed = scrubUrlPart(text, scrub);
  const readAs = readAsLatin(text);
  if (readAs === text) return scrubbed;
  const readAsScrubbed = scrubUrlPart(readAs, scrub);
  return readAsScrubbed === readAs ? scrubbed : readAsScrubbed;
}
