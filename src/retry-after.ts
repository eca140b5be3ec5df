/**
 * @module
 * `Retry-After` as RFC 9110 writes it: whole seconds, or an HTTP date. An answer from an upstream or
 * a proxy in front of it may use either; reading only the seconds made a date mean "at once"
 * (Graph's client, probe 84i F2).
 */

/**
 * Statuses that say "not now" rather than "no", from an upstream or a proxy before it: a timeout
 * (408), too early (425), too many (429); with every 5xx, retried by each outbound client. A 408
 * given up at once lost a WhatsApp reply, and Stripe's and the chat model's were refusals (probes
 * 84g F1, 84i F1).
 */
export const NOT_NOW_STATUSES: ReadonlySet<number> = new Set([408, 425, 429]);

/** The wait a `Retry-After` value asks for, in milliseconds from `now`, or undefined if unusable. */
export function retryAfterMs(value: string | null | undefined, now: number): number | undefined {
  const trimmed = value?.trim();
  if (!trimmed) return undefined;
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  // An HTTP date in one of its three forms, whole (IMF-fixdate, RFC 850, asctime). Date.parse reads
  // far more: `2.5` and `-5` were dates in 2001, a wait of nothing (probe 89f F2), and so were
  // `Mon 5` and `Fri 2001` once only the day's name was asked for first (probe 89g F1).
  if (!HTTP_DATE.test(trimmed)) return undefined;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

const DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
const DAY_NAME = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)";
const MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
const TIME = "\\d{2}:\\d{2}:\\d{2}";
/** RFC 9110 §5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT`, `Sun Nov  6 08:49:37 1994`. */
const HTTP_DATE = new RegExp(
  [
    `^${DAY}, \\d{2} ${MONTH} \\d{4} ${TIME} GMT$`,
    `^${DAY_NAME}, \\d{2}-${MONTH}-\\d{2} ${TIME} GMT$`,
    `^${DAY} ${MONTH} (?: \\d|\\d{2}) ${TIME} \\d{4}$`,
  ].join("|"),
);
