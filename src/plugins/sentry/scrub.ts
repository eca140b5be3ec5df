/**
 * @module
 * What leaves for Sentry is scrubbed here, in `beforeSend`, whatever put it into the event (our
 * error handler, a feature's `reportError`, the SDK itself):
 *
 * - request headers that carry a credential (`Cookie`, `Authorization`, `X-API-Key`, the CSRF
 *   token, webhook signatures) and the parsed cookies are removed;
 * - the request body of the auth routes (passwords, tokens) and of the chat routes (what users
 *   wrote) is removed; elsewhere, body fields and extra data whose name says credential or user
 *   text (`password`, `token`, `secret`, `message`, `content`, `prompt` …) are removed;
 * - in every string left anywhere in the event (message, exception values, breadcrumbs, extra,
 *   tags, contexts, request URL and query), every configured secret value, every API key
 *   (`pal_…`), bearer credential and JWT is replaced by `[Filtered]`.
 *
 * Written by hand: the SDK's own `sendDefaultPii: false` only stops it adding PII, and knows
 * neither our key format nor our secrets.
 */

export const FILTERED = "[Filtered]";

/** Headers whose value is a credential or a signature over a body. */
const CREDENTIAL_HEADERS = new Set([
  "authorization",
  "proxy-authorization",
  "cookie",
  "set-cookie",
  "x-api-key",
  "x-csrf-token",
  "stripe-signature",
  "x-hub-signature-256",
  "x-hub-signature",
]);

/** Route prefixes whose request bodies never leave: credentials, and what users wrote. */
const PRIVATE_BODY_PATHS = ["/api/auth", "/api/chat", "/api/me"];

/** Field names (in bodies, extra data, contexts) whose values are credentials or user text. */
const PRIVATE_FIELD =
  /pass(word|phrase)?|secret|token|api[-_]?key|authori[sz]ation|cookie|session|signature|credential|^(message|messages|content|prompt|text|reply)$/i;

/** Strings that are credentials whatever field they sit in. */
const CREDENTIAL_PATTERNS = [
  /pal_[A-Za-z0-9_-]+/g,
  /\bBearer\s+[A-Za-z0-9._~+/=-]+/gi,
  /\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g,
];

// Sentry's own structures whose keys are not user data (`contexts.trace`, `runtime`, `os` …).
const SDK_CONTEXTS = new Set([
  "trace",
  "runtime",
  "os",
  "device",
  "app",
  "culture",
  "cloud_resource",
]);

type Json = unknown;

export type Scrubber = <T>(event: T) => T;

export function createScrubber(secretValues: readonly string[]): Scrubber {
  // Longest first, so a secret that contains another is replaced whole.
  const secrets = [...new Set(secretValues)]
    .filter((s) => s.length > 0)
    .sort((a, b) => b.length - a.length);

  const scrubString = (value: string): string => {
    let out = value;
    for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join(FILTERED);
    for (const pattern of CREDENTIAL_PATTERNS) out = out.replace(pattern, FILTERED);
    return out;
  };

  /** Every string in the value, at any depth; private fields dropped where `dropFields`. */
  const deep = (value: Json, dropFields: boolean, depth = 0): Json => {
    if (typeof value === "string") return scrubString(value);
    if (value === null || typeof value !== "object" || depth > 20) return value;
    if (Array.isArray(value)) return value.map((item) => deep(item, dropFields, depth + 1));
    const out: Record<string, Json> = {};
    for (const [key, inner] of Object.entries(value)) {
      if (dropFields && PRIVATE_FIELD.test(key)) continue;
      out[scrubString(key)] = deep(inner, dropFields, depth + 1);
    }
    return out;
  };

  return function scrubEvent<T>(event: T): T {
    const copy = { ...(event as Record<string, Json>) };
    const request = copy.request as Record<string, Json> | undefined;
    if (request) {
      const cleaned: Record<string, Json> = { ...request };
      delete cleaned.cookies;
      if (cleaned.headers && typeof cleaned.headers === "object") {
        cleaned.headers = Object.fromEntries(
          Object.entries(cleaned.headers as Record<string, Json>).filter(
            ([name]) => !CREDENTIAL_HEADERS.has(name.toLowerCase()),
          ),
        );
      }
      const path = pathOf(cleaned.url);
      if (path === null || PRIVATE_BODY_PATHS.some((p) => path === p || path.startsWith(`${p}/`))) {
        delete cleaned.data;
      } else if ("data" in cleaned) {
        cleaned.data = deep(cleaned.data, true);
      }
      copy.request = deep(cleaned, false);
    }
    if (copy.extra) copy.extra = deep(copy.extra, true);
    if (copy.contexts && typeof copy.contexts === "object") {
      copy.contexts = Object.fromEntries(
        Object.entries(copy.contexts as Record<string, Json>).map(([name, context]) => [
          name,
          deep(context, !SDK_CONTEXTS.has(name)),
        ]),
      );
    }
    if (Array.isArray(copy.breadcrumbs)) {
      copy.breadcrumbs = copy.breadcrumbs.map((crumb: Record<string, Json>) => ({
        ...(deep(crumb, false) as Record<string, Json>),
        ...(crumb.data ? { data: deep(crumb.data, true) } : {}),
      }));
    }
    // Everything else (message, exception values and frames' variables, tags, user, logentry).
    for (const key of Object.keys(copy)) {
      if (key === "request" || key === "extra" || key === "contexts" || key === "breadcrumbs") {
        continue;
      }
      copy[key] = deep(copy[key], false);
    }
    return copy as T;
  };
}

function pathOf(url: Json): string | null {
  if (typeof url !== "string") return null;
  try {
    return new URL(url, "http://localhost").pathname;
  } catch {
    return null;
  }
}
