/**
 * @module
 * What leaves for Sentry is scrubbed here, in `beforeSend`, whatever put it into the event (our
 * error handler, a feature's `reportError`, the SDK itself):
 *
 * - of the request, only the method, the URL without its query string and fragment, an allowlist
 *   of harmless headers (`user-agent`, `content-type`, `content-length`, `accept`) and, outside the
 *   private routes, the body are kept; the query string, cookies, every other header and anything
 *   else are dropped. (Our reporter sends the route pattern as the URL, never the raw path.)
 * - the request body of the auth routes (passwords, tokens) and of the chat routes (what users
 *   wrote) is removed; elsewhere, body fields and extra data whose name says credential or user
 *   text (`password`, `token`, `secret`, `message`, `content`, `prompt` …) are removed;
 * - every string left anywhere in the event (message, exception values, breadcrumbs, extra, tags,
 *   contexts, request URL and headers) goes through the shared scrubber (logging/scrub): every
 *   configured secret value in every spelling (raw, percent- and form-encoded, base64url, and the
 *   decoded form of URL-encoded text), every API key (`pal_…`), bearer credential, JWT and
 *   credential query parameter is replaced by `[Filtered]`;
 * - what is nested deeper than 20 levels is replaced by `[Truncated]`, never passed on unscrubbed.
 *
 * Written by hand: the SDK's own `sendDefaultPii: false` only stops it adding PII, and knows
 * neither our key format nor our secrets.
 */
import { createTextScrubber, scrubUrlPart } from "../../logging/scrub";

export const FILTERED = "[Filtered]";
export const TRUNCATED = "[Truncated]";
/** Objects and arrays nested deeper than this are replaced by TRUNCATED. */
export const MAX_DEPTH = 20;

/** The only request headers that leave: none of them carries a credential. */
const ALLOWED_HEADERS = new Set(["user-agent", "content-type", "content-length", "accept"]);

/** Route prefixes whose request bodies never leave: credentials, and what users wrote. */
const PRIVATE_BODY_PATHS = ["/api/auth", "/api/chat", "/api/me"];

/** Field names (in bodies, extra data, contexts) whose values are credentials or user text. */
const PRIVATE_FIELD =
  /pass(word|phrase)?|pwd|secret|token|api[-_]?key|private[-_]?key|authori[sz]ation|cookie|session|signature|credential|^(message|messages|content|prompt|text|reply)$/i;

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
  const scrubText = createTextScrubber(secretValues, FILTERED);
  /** Decodes what is URL-encoded, so a secret spelled half-encoded is found too. */
  const scrubString = (value: string): string => scrubUrlPart(value, scrubText);

  /** Every string in the value, at any depth; private fields dropped where `dropFields`. */
  const deep = (value: Json, dropFields: boolean, depth = 0): Json => {
    if (typeof value === "string") return scrubString(value);
    if (value === null || typeof value !== "object") return value;
    if (depth >= MAX_DEPTH) return TRUNCATED;
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
    if (request && typeof request === "object") {
      const cleaned: Record<string, Json> = {};
      if (typeof request.method === "string") cleaned.method = request.method;
      const path = typeof request.url === "string" ? withoutQuery(request.url) : null;
      if (path !== null) cleaned.url = path;
      if (request.headers && typeof request.headers === "object") {
        cleaned.headers = Object.fromEntries(
          Object.entries(request.headers as Record<string, Json>).filter(([name]) =>
            ALLOWED_HEADERS.has(name.toLowerCase()),
          ),
        );
      }
      const pathname = pathOf(path);
      const privateBody =
        pathname === null ||
        PRIVATE_BODY_PATHS.some((p) => pathname === p || pathname.startsWith(`${p}/`));
      if (!privateBody && "data" in request) cleaned.data = deep(request.data, true, 1);
      copy.request = deep(cleaned, false);
    }
    if (copy.extra) copy.extra = deep(copy.extra, true);
    if (copy.contexts && typeof copy.contexts === "object") {
      copy.contexts = Object.fromEntries(
        Object.entries(copy.contexts as Record<string, Json>).map(([name, context]) => [
          name,
          deep(context, !SDK_CONTEXTS.has(name), 1),
        ]),
      );
    }
    if (Array.isArray(copy.breadcrumbs)) {
      copy.breadcrumbs = copy.breadcrumbs.map((crumb: Record<string, Json>) => ({
        ...(deep(crumb, false, 1) as Record<string, Json>),
        ...(crumb.data ? { data: deep(crumb.data, true, 2) } : {}),
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

/** The URL without its query string and fragment. */
function withoutQuery(url: string): string {
  const end = url.search(/[?#]/);
  return end < 0 ? url : url.slice(0, end);
}

function pathOf(url: string | null): string | null {
  if (url === null) return null;
  try {
    return new URL(url, "http://localhost").pathname;
  } catch {
    return null;
  }
}
