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
