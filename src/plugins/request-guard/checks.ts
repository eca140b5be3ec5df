/**
 * @module
 * What no honest client sends, as plain functions over the raw request. Each returns the refusal
 * (code and reason) or null. They run before any parsing, on the raw URL as the client sent it.
 */

import type { ErrorCode } from "../../errors";
import { trimOptionalWhitespace } from "../../optional-whitespace";
import { isEchoable } from "../error-handler/field-name";

export interface Refusal {
  code: ErrorCode;
  reason: string;
}

export interface GuardLimits {
  maxUrlLength: number;
  maxQueryLength: number;
}

export const DEFAULT_GUARD_LIMITS: GuardLimits = { maxUrlLength: 4096, maxQueryLength: 2048 };

/**
 * Encoded dots, slashes and backslashes, NUL, and double encoding: none of our routes uses them,
 * and each is how a traversal or filter bypass is smuggled past a proxy that decodes once.
 */
const SUSPICIOUS_PATH = /%00|%2e|%2f|%5c|%25|\\|\0/i;

export function checkUrl(url: string, limits: GuardLimits): Refusal | null {
  // "http://host" then the path: the third slash starts the path.
  const pathStart = url.indexOf("/", url.indexOf("//") + 2);
  const target = pathStart < 0 ? "/" : url.slice(pathStart);
  if (target.length > limits.maxUrlLength) {
    return { code: "URI_TOO_LONG", reason: `longer than ${limits.maxUrlLength} characters` };
  }
  const queryStart = target.indexOf("?");
  if (queryStart >= 0 && target.length - queryStart - 1 > limits.maxQueryLength) {
    return {
      code: "URI_TOO_LONG",
      reason: `query longer than ${limits.maxQueryLength} characters`,
    };
  }
  // A fragment is never sent (RFC 9112's request-target has none), and Bun keeps a raw `#` in
  // `request.url`: stages that parse the URL stop at it where Elysia reads past it, so `?x=#&limit=+3`
  // passed every query rule and `/api/admin/api-keys/..#` reached its handler with the parameter
  // `..#` while the stages saw `/api/admin/api-keys/#` (probe 84f F3, F4).
  if (target.includes("#")) {
    return { code: "BAD_PATH", reason: "a fragment (#) in the request target" };
  }
  const path = queryStart >= 0 ? target.slice(0, queryStart) : target;
  if (SUSPICIOUS_PATH.test(path)) {
    return { code: "BAD_PATH", reason: "encoded or control characters in the path" };
  }
  if (path.includes("/.")) {
    for (const segment of path.split("/")) {
      if (segment === ".." || segment === ".") {
        return { code: "BAD_PATH", reason: "dot segments in the path" };
      }
    }
  }
  return null;
}

/**
 * A route parameter that is a dot segment, or holds a backslash. Bun resolves dot segments (`..`,
 * `%2e%2e`, `.%2e`) in `request.url`, which every stage reads, and reads a `\` there as `/` (as
 * WHATWG URLs do), but its router matches the path as sent: `POST
 * /api/admin/payments/%2e%2e/refund` reached the refund route with `id` "..", while the stages
 * before routing classified `/api/admin/refund` (probe 32c F3), and `..\` or `..\..\x` did the
 * same (probe 84c F3). Such a request is refused as one whose dot segments or backslash the URL
 * still shows is.
 */
export function checkParams(params: Record<string, string> | undefined): Refusal | null {
  if (params === undefined) return null;
  for (const name in params) {
    const value = params[name]!;
    if (value === "." || value === "..") {
      return { code: "BAD_PATH", reason: "dot segments in the path" };
    }
    if (value.includes("\\")) {
      return { code: "BAD_PATH", reason: "a backslash in the path" };
    }
  }
  return null;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const CONTROL_IN_HEADER = /[\u0000-\u0008\u000a-\u001f\u007f]/;

/**
 * Headers whose value never holds a comma. Fetch joins repeated headers with ", ", so a comma here
 * means the header was sent twice, which is how request smuggling and auth confusion begin.
 */
const SINGLE_VALUED = [
  "authorization",
  "x-api-key",
  "x-csrf-token",
  "x-request-id",
  "idempotency-key",
  "content-type",
  "content-length",
  "host",
  "origin",
];

const SINGLE_VALUED_NAMES = new Set(SINGLE_VALUED);

/**
 * One pass over the headers as one object (Bun's `toJSON`, with repeated headers joined as `get`
 * joins them) that finds whether anything is wrong; only then does headerRefusal say what, in its
 * order. Half the cost of iterating the Headers and nine `get`s on every request.
 */
export function checkHeaders(headers: Headers): Refusal | null {
  const all = headers.toJSON() as Record<string, string | string[]>;
  for (const name in all) {
    const value = all[name]!;
    // Only set-cookie comes as a list; no client has a reason to send it: take the full check.
    if (typeof value !== "string") return headerRefusal(headers);
    if (CONTROL_IN_HEADER.test(value) || (SINGLE_VALUED_NAMES.has(name) && value.includes(","))) {
      return headerRefusal(headers);
    }
  }
  return null;
}

/** The refusal for headers checkHeaders found wrong: the first control character, then repeats. */
export function headerRefusal(headers: Headers): Refusal | null {
  for (const [name, value] of headers) {
    if (CONTROL_IN_HEADER.test(value)) {
      // A header's name is the client's: quoted only when a plain word (probe 84f F2).
      return {
        code: "BAD_HEADER",
        reason: `control characters in ${isEchoable(name) ? name : "a header"}`,
      };
    }
  }
  for (const name of SINGLE_VALUED) {
    const value = headers.get(name);
    if (value?.includes(",")) {
      return { code: "DUPLICATE_HEADER", reason: `${name} sent more than once` };
    }
  }
  return null;
}

/** The methods whose bodies the guard reads (and bounds, and refuses when not JSON). */
export const BODY_METHODS: ReadonlySet<string> = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export function hasBody(request: Request): boolean {
  if (!BODY_METHODS.has(request.method)) return false;
  const length = request.headers.get("content-length");
  if (length !== null) return length !== "0";
  if (request.headers.has("transfer-encoding")) return true;
  // A Request built in-process (app.handle) carries its body without either header.
  return request.body !== null;
}

/** The one media type a request body may have: every other is refused with 415. */
export const BODY_MEDIA_TYPE = "application/json";

/** A media type's parameter (lower-cased): its name, and its value as a token or a quoted string. */
const MEDIA_TYPE_PARAMETER =
  /^([!#$%&'*+.^_`|~0-9a-z-]+)=(?:([!#$%&'*+.^_`|~0-9a-z-]+)|"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)")$/;

/**
 * JSON only, and if a charset is named it must be UTF-8 (RFC 8259); and no content coding but
 * `identity`. Palisade decodes none (RFC 9110 §8.4 allows the 415): read as it is, a body labelled
 * gzip would be one thing to a proxy or filter in front that decodes it and another here.
 */
export function checkContentType(headers: Headers): Refusal | null {
  const coding = headers.get("content-encoding");
  if (coding !== null && trimOptionalWhitespace(coding).toLowerCase() !== "identity") {
    return {
      code: "UNSUPPORTED_MEDIA_TYPE",
      reason: "no Content-Encoding is accepted; send the body uncompressed",
    };
  }
  const raw = headers.get("content-type");
  if (raw === null) return { code: "UNSUPPORTED_MEDIA_TYPE", reason: "a body needs Content-Type" };
  // What nearly every client sends, decided without splitting it.
  if (raw === BODY_MEDIA_TYPE) return null;
  const [type, ...params] = raw.toLowerCase().split(";");
  if (type === undefined || trimOptionalWhitespace(type) !== BODY_MEDIA_TYPE) {
    return { code: "UNSUPPORTED_MEDIA_TYPE", reason: "only application/json is accepted" };
  }
  for (const param of params) {
    const spelled = trimOptionalWhitespace(param);
    if (spelled === "") continue;
    // RFC 9110 §5.6.6: a token, `=`, a token or a quoted string. Read loosely, `charset="utf-8`
    // and `charset=utf-8=latin1` were UTF-8 here, and may be another charset to a filter in
    // front (probe 90e F2).
    const parameter = MEDIA_TYPE_PARAMETER.exec(spelled);
    if (parameter === null) {
      return { code: "UNSUPPORTED_MEDIA_TYPE", reason: "a Content-Type parameter is malformed" };
    }
    const [, key, token, quoted] = parameter;
    const value = token ?? quoted!.replace(/\\(.)/g, "$1");
    if (key === "charset" && value !== "utf-8") {
      return { code: "UNSUPPORTED_MEDIA_TYPE", reason: "only UTF-8 JSON is accepted" };
    }
  }
  return null;
}

export function checkDeclaredLength(headers: Headers, limit: number): Refusal | null {
  const raw = headers.get("content-length");
  if (raw === null) return null;
  if (!/^\d+$/.test(raw)) return { code: "BAD_HEADER", reason: "content-length is not a number" };
  if (Number(raw) > limit) {
    return { code: "PAYLOAD_TOO_LARGE", reason: `the body is over ${limit} bytes` };
  }
  return null;
}
