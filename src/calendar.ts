/**
 * @module
 * Dates as clients write them. `Date.parse` takes 2026-02-30 and 2026-04-31 as the next month's
 * first days, so a day that does not exist would be read as another one: a date is real when it
 * comes back the same from the time it names.
 */

/** A real UTC day, `YYYY-MM-DD`. */
export function isCalendarDay(day: string): boolean {
  const time = Date.parse(`${day}T00:00:00Z`);
  return !Number.isNaN(time) && new Date(time).toISOString().slice(0, 10) === day;
}

/**
 * An instant written as RFC 3339 writes one: a `T`, at most milliseconds, and an offset. Without
 * an offset `Date.parse` reads the server's local time, and JSON Schema's `date-time` format let
 * a value with a `"` after it through, which `Date.parse` then read as nothing: an audit query
 * answered an empty page (probe 90l F4).
 */
// Hours 00–23 (`T24:00` was read as the next day: 90n F5), up to nine fraction digits (what Go and
// Python write), an upper-case `T` and `Z` (Date.parse reads no other).
const INSTANT =
  /^\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,9})?)?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$/;

/** An ISO 8601 date-time with an offset (INSTANT) whose date, as written, is a real day. */
export function isCalendarDateTime(text: string): boolean {
  return INSTANT.test(text) && !Number.isNaN(Date.parse(text)) && isCalendarDay(text.slice(0, 10));
}
