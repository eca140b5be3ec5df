/**
 * @module
 * Gives every request an id, echoed in `X-Request-Id`, logged and put in every problem document.
 * A caller's id is kept only when it is a short token of safe characters (at most 64 of
 * `A-Z a-z 0-9 . _ : -`) that does not look like a credential — no API key (`pal_…`), JWT or
 * bearer credential, as the shared scrubber (logging/scrub) sees them — so it can be logged and
 * echoed without escaping. Anything else is replaced, never trusted. One holding a configured
 * secret value is answered as it came (`answeredRequestId`: the header and problem documents) but
 * recorded under an id made here (`requestId`: logs, audit, Sentry), so that it never carries a
 * secret into the logs under a field the scrubbers leave alone, and the answer does not say whether
 * a string is a secret (probe 93f F1).
 *
 * Nor is an id that holds one shaped as Palisade makes them (a UUIDv7) kept: a client that copied another
 * request's id (one it was answered, or saw) would file its own request under it, and an operator
 * looking up an admin's action by its id found an anonymous failed login beside it in the audit
 * log, the logs and Sentry (probe 70d F1). An id a client chose can still be chosen by another
 * client; one Palisade made names one request.
 */
import { Elysia } from "elysia";
import { createTextScrubber } from "../../logging/scrub";

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
/** Replacement that cannot occur in a safe id, so any scrub shows as a change. */
const MARK = "\u0000";
const shapeScrubber = createTextScrubber([], MARK);
/**
 * An id this stage makes (`Bun.randomUUIDv7`), in any case, anywhere in the value: one with a
 * character added before or after it still turns up when an operator searches for the original.
 */
const MADE_HERE = /[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/i;
/** The same id's 32 digits with its dashes left out or others put in their place. */
const MADE_HERE_DIGITS = /^[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}/i;
/** How far back an id made here may be dated (ten years), or ahead (a day of clock skew). */
const MADE_HERE_SPAN_MS = { back: 10 * 365 * 24 * 60 * 60_000, ahead: 24 * 60 * 60_000 };

/**
 * Whether `value` holds an id made here in another spelling (its separators dropped or changed,
 * probe 88c F2: filed under it, a request turns up in a search that ignores them). Its first 48 bits
 * must be a time within MADE_HERE_SPAN_MS of `now`, so a client's own 32-digit trace id is kept
 * (1 in 64 has UUIDv7's version and variant digits by chance; few of those a recent time).
 */
function spellsAnIdMadeHere(value: string, now: number): boolean {
  const digits = value.replace(/[._:-]/g, "");
  for (let start = 0; start + 32 <= digits.length; start++) {
    const candidate = digits.slice(start, start + 32);
    if (!MADE_HERE_DIGITS.test(candidate)) continue;
    const madeAt = Number.parseInt(candidate.slice(0, 12), 16);
    if (madeAt > now - MADE_HERE_SPAN_MS.back && madeAt < now + MADE_HERE_SPAN_MS.ahead) {
      return true;
    }
  }
  return false;
}

/** Safe characters and length, and not shaped like an API key, JWT or bearer credential. */
export function acceptableRequestId(value: string | null): value is string {
  return value !== null && SAFE_REQUEST_ID.test(value) && shapeScrubber(value) === value;
}

export interface RequestIdOptions {
  /** Configured secret values: an incoming id that contains one is replaced. */
  secretValues?: readonly string[];
}

export function requestId(options: RequestIdOptions = {}) {
  const scrub = createTextScrubber(options.secretValues ?? [], MARK);
  const acceptable = (value: string | null): value is string =>
    acceptableRequestId(value) && !MADE_HERE.test(value) && !spellsAnIdMadeHere(value, Date.now());
  return new Elysia({ name: "palisade.request-id" })
    .decorate("requestId", "")
    .decorate("answeredRequestId", "")
    .decorate("startedAt", 0)
    .onRequest(function assignRequestId(context) {
      const incoming = context.request.headers.get("x-request-id");
      const kept = acceptable(incoming) ? incoming : null;
      // One holding a configured secret is recorded under an id made here (logs, audit, Sentry),
      // but answered as it came, as any kept id is: replaced in the answer, it told anyone asking
      // whether a string was one of the service's secrets (probe 93f F1). Its sender has it.
      const id = kept !== null && scrub(kept) === kept ? kept : Bun.randomUUIDv7();
      context.requestId = id;
      context.answeredRequestId = kept ?? id;
      context.startedAt = performance.now();
      context.set.headers["x-request-id"] = kept ?? id;
    })
    .as("global");
}
