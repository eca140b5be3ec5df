/**
 * @module
 * Sends a text through the WhatsApp Cloud API (`POST {WHATSAPP_API_URL}/{phone_number_id}/messages`,
 * Bearer WHATSAPP_ACCESS_TOKEN), and classifies what came back as a value:
 *
 * - `sent`: 2xx with Graph's `{messages:[{id}]}`; the id is what status callbacks name.
 * - `transient`: worth retrying — a network error or timeout, 429, 5xx, a Graph error code that
 *   Meta documents as temporary (throughput and rate limits, "something went wrong"), or the access
 *   token refused (401, code 190: expired or revoked): an operator fixes a token in minutes, and a
 *   restart with the new one sends what is still pending (probe 26g: every reply owed when a token
 *   lapsed was given up at once).
 * - `permanent`: anything else (a number that is not on WhatsApp, a message outside the 24-hour
 *   window, a request Graph refuses): retrying cannot help.
 *
 * Plain `fetch`: there is no official Graph SDK for Node/Bun, and this is one JSON POST.
 */

import { boundedFetch } from "../../bounded-fetch";
import { createTextScrubber } from "../../logging/scrub";
import { NOT_NOW_STATUSES, retryAfterMs } from "../../retry-after";

export type SendOutcome =
  | { kind: "sent"; messageId: string }
  | { kind: "transient"; reason: string; retryAfterMs?: number }
  | { kind: "permanent"; reason: string };

export interface TextMessage {
  phoneNumberId: string;
  to: string;
  body: string;
}

export interface GraphClient {
  sendText(message: TextMessage, signal?: AbortSignal): Promise<SendOutcome>;
}

export interface GraphClientOptions {
  apiUrl: string;
  accessToken: string;
  fetch?: typeof fetch;
  /** Per request; a slower answer is a transient failure. */
  timeoutMs?: number;
  /**
   * The service's other secrets (config.secretValues): an error text that quotes one (a proxy's
   * echo of a request, a Graph look-alike's) must not store it in `last_error` either (probe 29c
   * F4: the app secret and Stripe's key were kept there in clear).
   */
  otherSecrets?: readonly string[];
}

/**
 * Graph error codes Meta lists as temporary: 1/2 (unknown or service error), 4/80007/130429
 * (rate and throughput limits), 131000 (something went wrong), 131016 (service unavailable),
 * 131056 (too many messages to one user), 133004 (server temporarily unavailable).
 */
const TRANSIENT_GRAPH_CODES = new Set([1, 2, 4, 80007, 130429, 131000, 131016, 131056, 133004]);
/** Graph's "access token expired, revoked or invalid" (OAuthException). */
const TOKEN_REFUSED_CODE = 190;
const MAX_RETRY_AFTER_MS = 5 * 60_000;

interface GraphError {
  error?: { message?: unknown; code?: unknown; type?: unknown; fbtrace_id?: unknown };
}

const REDACTED_TOKEN = "[redacted]";

/**
 * Takes the token out of a text: every copy in any letter case, then every spelling the logs'
 * scrubber knows (percent-encoded, base64, …), and the same for every other configured secret and
 * every credential shape the logs' scrubber knows (an API key, a JWT, a `Bearer` credential). The
 * reason is stored on the row (`last_error`) and audited, and an error text that quotes a secret
 * (a proxy's, a mock's) must not put it there (probes 27g F6, 27h F1–F2, 29c F4). Applied before
 * the text is cut, or a secret across the cut would keep its first part.
 */
function secretRemover(token: string, otherSecrets: readonly string[]): (text: string) => string {
  const spellings = createTextScrubber([token, ...otherSecrets], REDACTED_TOKEN);
  if (token === "") return spellings;
  const anyCase = new RegExp(token.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gi");
  return (text) => spellings(text.replace(anyCase, REDACTED_TOKEN));
}

/** The shortest piece of a sent text taken out of an error text that quotes it. */
const QUOTED_PIECE = 12;
/** What of an error text is looked through for what was sent (and kept: 200 of it). */
const ERROR_TEXT_READ = 1000;

/**
 * Takes what was sent out of an error text: the recipient's number, and every other run of seven
 * digits or more in any spelling (+, spaces, dashes, brackets) but the business number's id, as
 * `[number]`, and every piece of the sent text a dozen characters or longer as `[text]`. The
 * reason is stored on the row once its number is cleared, audited for 90 days in a chain nothing
 * can redact later, and logged; an error that quotes the request (a proxy's, a look-alike's echo)
 * kept both there (probe 59b F2).
 */
function withoutWhatWasSent(text: string, sent: TextMessage): string {
  const numbers = text.replace(/\+?\(?\d(?:[\s().-]*\d){6,}/g, (run) =>
    run === sent.phoneNumberId ? run : "[number]",
  );
  let kept = "";
  let at = 0;
  while (at < numbers.length) {
    const quoted = longestQuotedAt(numbers, at, sent.body);
    if (quoted >= QUOTED_PIECE) {
      kept += "[text]";
      at += quoted;
    } else {
      kept += numbers[at];
      at++;
    }
  }
  return kept;
}

/**
 * The length of the longest piece of `text` from `at` that `sent` holds, found by halving: every
 * shorter piece from `at` is held too.
 */
function longestQuotedAt(text: string, at: number, sent: string): number {
  let held = 0;
  let notHeld = Math.min(text.length - at, sent.length) + 1;
  while (notHeld - held > 1) {
    const middle = (held + notHeld) >> 1;
    if (sent.includes(text.slice(at, at + middle))) held = middle;
    else notHeld = middle;
  }
  return held;
}

function describeError(
  status: number,
  body: GraphError | null,
  withoutToken: (text: string) => string,
  sent: TextMessage,
): { code: number | null; reason: string } {
  const code = typeof body?.error?.code === "number" ? body.error.code : null;
  const message =
    typeof body?.error?.message === "string"
      ? withoutWhatWasSent(withoutToken(body.error.message).slice(0, ERROR_TEXT_READ), sent).slice(
          0,
          200,
        )
      : "";
  return {
    code,
    reason: `graph ${status}${code === null ? "" : ` code ${code}`}${message ? `: ${message}` : ""}`,
  };
}

/**
 * The most of an answer read: Graph's answers (an id, or an error) are a few hundred bytes. A
 * larger one is not read on into memory (an endless body was held until the timeout; probe 54a
 * F1's class) and counts as an answer without a body.
 */
export const GRAPH_ANSWER_BYTES = 64 * 1024;

function retryAfter(header: string | null): number | undefined {
  const asked = retryAfterMs(header, Date.now());
  return asked === undefined ? undefined : Math.min(asked, MAX_RETRY_AFTER_MS);
}

export function createGraphClient(options: GraphClientOptions): GraphClient {
  const doFetch = boundedFetch({ bodyBytes: GRAPH_ANSWER_BYTES }, options.fetch ?? fetch);
  const base = options.apiUrl.replace(/\/+$/, "");
  const timeoutMs = options.timeoutMs ?? 10_000;
  const withoutToken = secretRemover(options.accessToken, options.otherSecrets ?? []);

  return {
    async sendText(message, signal) {
      const { phoneNumberId, to, body } = message;
      const timeout = AbortSignal.timeout(timeoutMs);
      let response: Response;
      try {
        response = await doFetch(`${base}/${encodeURIComponent(phoneNumberId)}/messages`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${options.accessToken}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to,
            type: "text",
            text: { preview_url: false, body },
          }),
          signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
          redirect: "error",
        });
      } catch (error) {
        const name = error instanceof Error ? error.name : "Error";
        return {
          kind: "transient",
          reason: name === "TimeoutError" ? "graph timeout" : `network: ${name}`,
        };
      }
      let parsed: unknown = null;
      try {
        parsed = await response.json();
      } catch {
        // Not JSON, cut, or past its bound (UpstreamTooLarge): an answer without a body.
        parsed = null;
      }
      if (response.ok) {
        const id = (parsed as { messages?: { id?: unknown }[] } | null)?.messages?.[0]?.id;
        if (typeof id === "string" && id.length > 0 && id.length <= 256) {
          return { kind: "sent", messageId: id };
        }
        // Accepted (2xx) but without an id: it was sent; the id is only for status callbacks.
        return { kind: "sent", messageId: "" };
      }
      const { code, reason } = describeError(
        response.status,
        parsed as GraphError | null,
        withoutToken,
        message,
      );
      if (response.status === 401 || code === TOKEN_REFUSED_CODE) {
        return {
          kind: "transient",
          reason: `access token refused (WHATSAPP_ACCESS_TOKEN): ${reason}`,
        };
      }
      if (
        NOT_NOW_STATUSES.has(response.status) ||
        response.status >= 500 ||
        (code !== null && TRANSIENT_GRAPH_CODES.has(code))
      ) {
        return {
          kind: "transient",
          reason,
          retryAfterMs: retryAfter(response.headers.get("retry-after")),
        };
      }
      return { kind: "permanent", reason };
    },
  };
}
