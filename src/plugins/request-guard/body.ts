import { AppError } from "../../errors";
import type { BodyAccount } from "./large-bodies";

/**
 * Reads a body of unknown length (chunked) and stops as soon as it passes `limit`, so an endless
 * stream costs at most `limit` bytes of memory. Returns the bytes as received: webhook signatures
 * are computed over them, not over a decoded and re-encoded string.
 */
export async function readBodyWithin(
  request: Request,
  limit: number,
  /** Charged each chunk as it arrives (large-bodies.ts); it throws past its bounds. */
  account?: BodyAccount,
): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  // A declared length was already checked against the limit, and Bun enforces it while reading.
  if (declared !== null) return request.bytes();
  if (request.body === null) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new AppError("PAYLOAD_TOO_LARGE", `The body is over ${limit} bytes.`);
    }
    if (account) {
      try {
        account.grow(value.byteLength);
      } catch (error) {
        await reader.cancel();
        throw error;
      }
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

const utf8 = new TextDecoder();

/** What the guard stores on the context of a route class marked `exactBytes` (readExact). */
interface ExactBodyFields {
  rawBody?: string;
  rawBytes?: Uint8Array;
}

const NO_BYTES = new Uint8Array();

/** Stores the body read for a route class marked `exactBytes`, for exactBodyOf. */
export function keepExactBody(context: object, body: { bytes: Uint8Array; text: string }): void {
  (context as ExactBodyFields).rawBody = body.text;
  (context as ExactBodyFields).rawBytes = body.bytes;
}

/**
 * The body of a request on a route class marked `exactBytes` as the guard read it: its bytes as
 * received and their text; both empty when no JSON body was read (none sent, or another media
 * type, which the guard refuses first). The one reader of what keepExactBody stored: each webhook
 * module declared the fields itself before, one as `null` and one as `undefined`, and whichever
 * registered first set the default for both — an empty POST to the Stripe webhook met `null`
 * where it checked for `undefined` and answered 500 (probe 27c F2).
 */
export function exactBodyOf(context: object): { bytes: Uint8Array; text: string } {
  const { rawBody, rawBytes } = context as ExactBodyFields;
  return { bytes: rawBytes ?? NO_BYTES, text: rawBody ?? "" };
}

/**
 * The body as text, read within `limit` as readBodyWithin reads it. A declared length is read by
 * Bun's own `text()`, which decodes as it reads (as TextDecoder does: replacement characters for
 * bytes that are not UTF-8, a leading byte-order mark dropped): over HTTP 1.5–2 µs a request
 * less than the bytes and a TextDecoder, on a route with a small JSON body. Not `async`: the promise
 * `text()` returns is the answer, with no second one wrapped around it.
 */
export function readTextWithin(
  request: Request,
  limit: number,
  account?: BodyAccount,
): Promise<string> {
  if (request.headers.get("content-length") !== null) return request.text();
  return readBodyWithin(request, limit, account).then((bytes) => utf8.decode(bytes));
}

/**
 * The body's bytes as received, read within `limit`, and their text decoded as readTextWithin
 * decodes it: for a signature computed over the bytes, not a re-serialisation nor a decoding (two
 * byte strings can decode to one text).
 */
export function readExactWithin(
  request: Request,
  limit: number,
  account?: BodyAccount,
): Promise<{ bytes: Uint8Array; text: string }> {
  return readBodyWithin(request, limit, account).then((bytes) => ({
    bytes,
    text: utf8.decode(bytes),
  }));
}

/**
 * No route's body nests this deep. A deeper one is refused before it is parsed: validating or
 * walking a body thousands of levels deep runs out of stack (a 500 anyone could provoke).
 */
export const MAX_BODY_DEPTH = 32;

/** Nested deeper than the limit (and not scanned further). */
export const TOO_DEEP = -1;

/** Holds a number written with more digits than JSON.parse keeps (see `numberDrifts`). */
export const IMPRECISE_NUMBER = -2;

/**
 * No route with a schema takes a body of more than a few dozen values (the largest, a payment's,
 * holds 20 metadata pairs). A body past this many is refused before it is parsed: a 55 KB body of
 * 27,000 empty arrays nested 30 deep, sent to sign-up, held the event loop 40–50 ms while it was
 * validated and its refusal written, every /health waiting behind it (probe 89b F1).
 */
export const MAX_BODY_VALUES = 1024;

/** Holds more values (arrays, objects, and the items and members in them) than the limit. */
export const TOO_MANY_VALUES = -3;

/**
 * One pass over JSON text's characters: TOO_DEEP when it nests arrays and objects deeper than
 * `max`, TOO_MANY_VALUES when it holds more than about `maxValues` values, else IMPRECISE_NUMBER when it writes a number JSON.parse reads as another
 * (`numberDrifts`), else how many keys it spells out. In valid JSON every `:` outside a string
 * follows one key, so once the text has parsed, more keys here than in the parsed value means a
 * key was repeated in one object (JSON.parse keeps the last).
 */
export function scanJsonText(
  text: string,
  max: number,
  maxValues = Number.POSITIVE_INFINITY,
): number {
  let depth = 0;
  let keys = 0;
  // Every value but the first follows a `,` or opens an array or object's first item: a count of
  // those outside strings is at least the values less one.
  let values = 1;
  let inString = false;
  let imprecise = false;
  let lastChecked = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x3a) {
      keys++;
    } else if (c === 0x2c) {
      if (++values > maxValues) return TOO_MANY_VALUES;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return TOO_DEEP;
      if (++values > maxValues) return TOO_MANY_VALUES;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      // Outside a string only a number has a digit or a minus (a key is a string, and `true`,
      // `false` and `null` hold neither).
      // The digits from the first that is not 0, and the exponent's size: a number of at most
      // fifteen such digits, well inside a double's range, is kept as written (nearly every
      // number sent), and only another is read again to compare (`numberDrifts`).
      const start = i;
      let significant = c >= 0x31 && c <= 0x39 ? 1 : 0;
      let exponent = -1;
      for (; i + 1 < text.length; i++) {
        const next = text.charCodeAt(i + 1);
        if (next >= 0x30 && next <= 0x39) {
          if (exponent >= 0) exponent = Math.min(exponent * 10 + next - 0x30, MAX_EXPONENT);
          else if (significant > 0 || next !== 0x30) significant++;
        } else if (next === 0x65 || next === 0x45) {
          exponent = 0;
        } else if (next !== 0x2e && next !== 0x2d && next !== 0x2b) {
          break;
        }
      }
      const length = i + 1 - start;
      if (
        !imprecise &&
        (significant > EXACT_DIGITS || Math.max(exponent, 0) + length > SAFE_SCALE)
      ) {
        const written = text.slice(start, i + 1);
        // A body repeats its numbers (an array of one value): each spelling is read once.
        if (written !== lastChecked) {
          imprecise = numberDrifts(written);
          lastChecked = written;
        }
      }
    }
  }
  return imprecise ? IMPRECISE_NUMBER : keys;
}

/** Significant digits every double keeps: a number of at most this many reads back as written. */
const EXACT_DIGITS = 15;
/** A scale (exponent and written length) well inside a double's range, 10^±308. */
const SAFE_SCALE = 290;
const MAX_EXPONENT = 100_000;

/**
 * Whether JSON.parse reads the number written as another: more digits than a double keeps
 * (`3650.0000000000001` is 3650, `9007199254740993` is …992, `0.99999999999999999999` is 1), too
 * large (`1e400`, Infinity) or too small (`1e-400`, 0) for one. A schema's bounds and whole-number
 * rule are then checked on a number the client did not write, and what read the text in front (a
 * filter with exact decimals, a log) saw another body (probe 75c F3). Two spellings are the
 * number JSON.parse reads: its shortest (`0.30000000000000004`, what JavaScript's encoders write)
 * and its exact value however long (`1152921504606846976`, 2^60; `2.82879384806159008E17`, as
 * Java writes it; probe 75e F3).
 */
function numberDrifts(written: string): boolean {
  const read = Number(written);
  if (!Number.isFinite(read)) return true;
  const spelled = String(read);
  if (spelled === written) return false;
  // A whole number (`144115188075855872`, 2^57 as Go and Jackson write it) is compared as one:
  // read out in full, a finite double that JSON.parse made of digits alone is a whole number.
  if (WHOLE_NUMBER.test(written)) return BigInt(written) !== BigInt(read);
  const value = decimalOf(written);
  if (value === undefined) return true;
  if (read === 0) return value.digits !== "";
  const shortest = decimalOf(spelled);
  if (
    shortest !== undefined &&
    value.negative === shortest.negative &&
    value.digits === shortest.digits &&
    value.power === shortest.power
  ) {
    return false;
  }
  return !isExactly(value, read);
}

const WHOLE_NUMBER = /^-?\d{1,400}$/;

/** A decimal number as its sign, its digits without the zeros around them, and a power of ten. */
interface Decimal {
  negative: boolean;
  digits: string;
  power: number;
}

/**
 * `1.50e3` is 15 × 10^2. Read with index loops, not regular expressions: a pattern such as
 * `0+$` on a number of a hundred thousand zeros and a 1 backtracks quadratically, and froze the
 * service for a minute on one 250 KiB body (probe 75e F2).
 */
function decimalOf(text: string): Decimal | undefined {
  let i = 0;
  const negative = text.charCodeAt(0) === 0x2d;
  if (negative) i++;
  let digits = "";
  let fractionLength = 0;
  let inFraction = false;
  const start = i;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e && !inFraction) inFraction = true;
    else if (c < 0x30 || c > 0x39) break;
    else if (inFraction) fractionLength++;
  }
  digits = text.slice(start, i).replace(".", "");
  let exponent = 0;
  if (i < text.length) {
    if ((text.charCodeAt(i) | 0x20) !== 0x65) return undefined;
    const written = Number(text.slice(i + 1));
    if (!Number.isInteger(written)) return undefined;
    exponent = written;
  }
  let first = 0;
  while (first < digits.length && digits.charCodeAt(first) === 0x30) first++;
  let end = digits.length;
  while (end > first && digits.charCodeAt(end - 1) === 0x30) end--;
  return {
    negative,
    digits: digits.slice(first, end),
    power: exponent - fractionLength + (digits.length - end),
  };
}

/**
 * Whether a decimal is exactly the double's value. Every double is an integer times a power of
 * two from 2^-1074 to 2^971, whose exact decimal has at most 767 significant digits and a power
 * of ten from -1074 to 308, so a number beyond those is not one and is never multiplied out.
 */
function isExactly(value: Decimal, read: number): boolean {
  if (value.negative !== read < 0) return false;
  if (value.digits.length > MAX_EXACT_DIGITS) return false;
  if (value.power < -1_100 || value.power > 310) return false;
  const bits = new DataView(new ArrayBuffer(8));
  bits.setFloat64(0, Math.abs(read));
  const high = bits.getUint32(0);
  const biased = high >>> 20;
  const fraction = (BigInt(high & 0xfffff) << 32n) | BigInt(bits.getUint32(4));
  const mantissa = biased === 0 ? fraction : fraction | (1n << 52n);
  const twos = (biased === 0 ? 1 : biased) - 1075;
  let left = BigInt(value.digits);
  let right = mantissa;
  if (value.power >= 0) left *= 10n ** BigInt(value.power);
  else right *= 10n ** BigInt(-value.power);
  if (twos >= 0) right <<= BigInt(twos);
  else left <<= BigInt(-twos);
  return left === right;
}

/** Significant digits in the longest exact decimal of a double (2^-1074 and its neighbours). */
const MAX_EXACT_DIGITS = 767;
