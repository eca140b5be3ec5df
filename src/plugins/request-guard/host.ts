/**
 * @module
 * The `Host` header, and the request target Elysia reads from `request.url`.
 *
 * Elysia finds the path by slicing `request.url` from the first `/` at or after index 11 (the
 * length of `http://` and a four-character host), so `Host: x` with `GET /zz/health` reads
 * `http://x/zz/health` as `/health`. Bun also hands over a bare path (`/zz/health`) as the URL
 * when the Host is malformed, which the same slice cuts wherever the path has a `/` past index 11.
 * withRealPath gives Elysia a URL it slices correctly whenever the real one would not; it is an
 * Elysia `wrap`, so it runs before the path is computed, for the router, every hook and the logs.
 *
 * checkHost then refuses a malformed Host in every profile and, when ALLOWED_HOSTS is set, any
 * host not listed (a port is ignored when matching): the host a response is built for must be
 * one the operator named, or a poisoned Host can reach links, redirects and caches.
 */
import { formatAddress, parseIp } from "../client-ip/address";
import type { Refusal } from "./checks";

/** Where a URL is sent that Elysia could not slice correctly; `.invalid` never resolves (RFC 6761). */
const PLACEHOLDER_ORIGIN = "http://host.invalid";

/**
 * The request, with `url` replaced when Elysia's fixed offset would find the wrong path (a host
 * under four characters, or a bare path). The common case costs one indexOf and one startsWith.
 */
export function withRealPath(request: Request): Request {
  const url = request.url;
  const authorityEnd = url.indexOf("/", 8);
  if (authorityEnd >= 11 && url.startsWith("http")) return request;
  let target: string;
  if (url.startsWith("http://") || url.startsWith("https://")) {
    target = authorityEnd < 0 ? "/" : url.slice(authorityEnd);
  } else {
    target = url.startsWith("/") ? url : `/${url}`;
  }
  // An own property shadows Request.prototype.url; the object (and Bun's socket for requestIP)
  // stays the same.
  Object.defineProperty(request, "url", { value: PLACEHOLDER_ORIGIN + target, configurable: true });
  return request;
}

const LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const HOST_NAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*\\.?$`, "i");
const PORT = /^[1-9][0-9]{0,4}$/;
/** A last label that WHATWG URL parsers read as a number, making the name an IPv4 address. */
const NUMERIC_LAST_LABEL = /(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)\.?$/i;

export interface ParsedHost {
  /** Lower-cased, without a trailing dot; an IPv6 literal in brackets, RFC 5952 form. */
  name: string;
  port: number | null;
}

/**
 * A Host header (RFC 9110 section 7.2: uri-host [":" port]) as we accept it: a DNS name of ASCII
 * letters, digits and hyphens, a canonical IPv4 address, or a bracketed IPv6 address, then an
 * optional port 1–65535. No userinfo, path, query, percent-encoding, whitespace or non-ASCII.
 */
export function parseHost(raw: string): ParsedHost | null {
  if (raw.length === 0 || raw.length > 260) return null;
  let hostPart = raw;
  let port: number | null = null;
  const closing = raw.lastIndexOf("]");
  const colon = raw.lastIndexOf(":");
  if (colon > closing) {
    const portText = raw.slice(colon + 1);
    if (!PORT.test(portText) || Number(portText) > 65535) return null;
    port = Number(portText);
    hostPart = raw.slice(0, colon);
  }
  if (hostPart.startsWith("[")) {
    if (!hostPart.endsWith("]")) return null;
    const address = parseIp(hostPart.slice(1, -1));
    if (address === null || !hostPart.includes(":")) return null;
    const text = address.kind() === "ipv6" ? formatAddress(address) : `::ffff:${address}`;
    return { name: `[${text}]`, port };
  }
  if (!HOST_NAME.test(hostPart)) return null;
  const name = hostPart.toLowerCase().replace(/\.$/, "");
  // "010.1.1.1" or "0x7f.1" is an address to a browser, and only its canonical spelling is one.
  if (NUMERIC_LAST_LABEL.test(name) && parseIp(name) === null) return null;
  return { name, port };
}

/** The Host check: malformed is always refused; with a list, only listed names pass. */
export function checkHost(
  request: Request,
  allowedHosts: ReadonlySet<string> | null,
): Refusal | null {
  return hostVerdict(request.headers.get("host") ?? authorityOf(request.url), allowedHosts);
}

function hostVerdict(raw: string | null, allowedHosts: ReadonlySet<string> | null): Refusal | null {
  const host = raw === null ? null : parseHost(raw);
  if (host === null) return { code: "BAD_HEADER", reason: "host is malformed" };
  if (allowedHosts !== null && !allowedHosts.has(host.name)) {
    return { code: "BAD_HEADER", reason: "host is not one this service answers for" };
  }
  return null;
}

/** How many distinct Host values one guard remembers the verdict of. */
export const HOST_CACHE_LIMIT = 256;

export interface HostCheck {
  (request: Request): Refusal | null;
  /** How many Host values are remembered now (at most the limit). */
  readonly size: number;
}

/**
 * checkHost, remembering the verdict per exact Host value: nearly every request names one of a
 * few hosts, and parsing one (regexes, and the address parser for a literal) is most of the
 * guard's cost. The key is the raw value, so another spelling is parsed on its own; a flood of
 * distinct values empties the cache when it is full rather than growing it.
 */
export function createHostCheck(
  allowedHosts: ReadonlySet<string> | null,
  limit = HOST_CACHE_LIMIT,
): HostCheck {
  const verdicts = new Map<string, Refusal | null>();
  const check = function checkHostOnce(request: Request): Refusal | null {
    const raw = request.headers.get("host") ?? authorityOf(request.url);
    if (raw === null) return hostVerdict(null, allowedHosts);
    let verdict = verdicts.get(raw);
    if (verdict === undefined) {
      verdict = hostVerdict(raw, allowedHosts);
      if (verdicts.size >= limit) verdicts.clear();
      verdicts.set(raw, verdict);
    }
    return verdict;
  };
  return Object.defineProperty(check, "size", { get: () => verdicts.size }) as HostCheck;
}

/** A request built in process (app.handle) has no Host header; its URL names the host. */
function authorityOf(url: string): string | null {
  const start = url.indexOf("//");
  if (start < 0) return null;
  const end = url.indexOf("/", start + 2);
  return url.slice(start + 2, end < 0 ? undefined : end);
}

type Handle = (request: Request) => unknown;
const wrappedHandles = new WeakMap<Handle, Handle>();

/**
 * The Elysia `wrap` (higher-order function) that runs withRealPath before Elysia computes the
 * path, for the fallback handler and for the routes Bun itself dispatches. Elysia calls it per
 * request with the same handle; the wrapper is made once per handle, not once per request.
 */
export function realPathFirst(handle: Handle, _request: Request): Handle {
  let wrapped = wrappedHandles.get(handle);
  if (wrapped === undefined) {
    wrapped = function handleWithRealPath(request: Request) {
      return handle(withRealPath(request));
    };
    wrappedHandles.set(handle, wrapped);
  }
  return wrapped;
}
