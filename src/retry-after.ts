/**
 * @module
 * `Retry-After` as RFC 9110 writes it: whole seconds, or an HTTP date. An answer from an upstream or
 * a proxy in front of it may use either; reading only the seconds made a date mean "at once"
 * (Graph's client, probe 84i F2).
 */

/** The wait a `Retry-After` value asks for, in milliseconds from `now`, or undefined if unusable. */
export function retryAfterMs(value: string | null | undefined, now: number): number | undefined {
  const trimmed = value?.trim();
  if (!trimmed) return undefined;
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}
