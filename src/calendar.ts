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

/** An ISO 8601 date-time (already checked for its shape) whose date, as written, is a real day. */
export function isCalendarDateTime(text: string): boolean {
  return isCalendarDay(text.slice(0, 10));
}
