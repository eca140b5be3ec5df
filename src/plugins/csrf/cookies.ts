/**
 * @module
 * The browser-session cookie names, and a Cookie header reader. Behind TLS the names carry the
 * `__Host-` prefix, which browsers accept only with Secure, Path=/ and no Domain: a subdomain
 * cannot plant or overwrite them.
 */

export interface CookieNames {
  session: string;
  refresh: string;
  csrf: string;
}

export function cookieNames(requireTls: boolean): CookieNames {
  const prefix = requireTls ? "__Host-" : "";
  return {
    session: `${prefix}palisade_session`,
    refresh: `${prefix}palisade_refresh`,
    csrf: `${prefix}palisade_csrf`,
  };
}

/**
 * Whether the request sends a credential in a header (`Authorization`, `X-API-Key`). Its cookies
 * are then never read as a credential — not the session cookie (auth), not the refresh cookie
 * (`POST /api/auth/refresh`) — which is what lets CSRF exempt it: a browser attaches neither
 * header to a forged cross-site request, and a request that sends one is not riding on a cookie.
 */
export function sendsHeaderCredential(headers: Headers): boolean {
  return headers.has("authorization") || headers.has("x-api-key");
}

/**
 * The value of one cookie from a Cookie header, or null. Only the space and tab around a name or
 * value are dropped, as RFC 6265 and browsers drop them: `trim()` also drops U+00A0, which Bun
 * reads from a 0xA0 byte, so a cookie named `\xA0__Host-palisade_session` — which a browser does
 * not hold to the `__Host-` rules, so a sibling subdomain can set it, sent first by its longer
 * path — was read as the session cookie, signing the victim's page in as the attacker (probe
 * 82c F1).
 */
export function readCookie(header: string | null, name: string): string | null {
  if (header === null || name === "") return null;
  // Found by searching for the name, nothing split or copied but the value: read several times a
  // request before the limiter can refuse it, a 16 KB header of 4,000 pairs cost 0.3 ms a read
  // split into parts (probe 87b F2). A find counts where a part begins (after a `;` or the
  // header's start, and space or tab) and is followed, past space or tab, by `=`: the first such.
  const end = header.length;
  for (let found = header.indexOf(name); found >= 0; found = header.indexOf(name, found + 1)) {
    let before = found - 1;
    while (before >= 0 && (header[before] === " " || header[before] === "\t")) before--;
    if (before >= 0 && header.charCodeAt(before) !== SEMICOLON) continue;
    const at = skipCookieSpace(header, found + name.length, end);
    if (at < end && header.charCodeAt(at) === EQUALS) {
      const stop = header.indexOf(";", at);
      return withoutCookieSpace(header.slice(at + 1, stop < 0 ? end : stop));
    }
  }
  return null;
}

const SEMICOLON = 0x3b;
const EQUALS = 0x3d;

/** Where the space and tab from `from` end, at `stop` at most. */
function skipCookieSpace(text: string, from: number, stop: number): number {
  let at = from;
  while (at < stop && (text[at] === " " || text[at] === "\t")) at++;
  return at;
}

function withoutCookieSpace(text: string): string {
  let from = 0;
  let to = text.length;
  while (from < to && (text[from] === " " || text[from] === "\t")) from++;
  while (to > from && (text[to - 1] === " " || text[to - 1] === "\t")) to--;
  return text.slice(from, to);
}

export interface CookieOptions {
  maxAgeSeconds: number;
  httpOnly: boolean;
  secure: boolean;
}

export function serializeCookie(name: string, value: string, options: CookieOptions): string {
  const parts = [
    `${name}=${value}`,
    "Path=/",
    `Max-Age=${options.maxAgeSeconds}`,
    "SameSite=Strict",
  ];
  if (options.httpOnly) parts.push("HttpOnly");
  if (options.secure) parts.push("Secure");
  return parts.join("; ");
}
