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

/** The value of one cookie from a Cookie header, or null. */
export function readCookie(header: string | null, name: string): string | null {
  if (header === null) return null;
  for (const part of header.split(";")) {
    const equals = part.indexOf("=");
    if (equals < 0) continue;
    if (part.slice(0, equals).trim() === name) return part.slice(equals + 1).trim();
  }
  return null;
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
