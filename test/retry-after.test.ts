/**
 * `Retry-After` as RFC 9110 writes it: whole seconds, or an HTTP date in one of its three forms.
 * Anything else is no value (the caller's own backoff), never a date Date.parse happens to read.
 */
import { expect, test } from "bun:test";
import { retryAfterMs } from "../src/retry-after";

const now = Date.parse("2026-12-06T12:00:00Z");

test("seconds and the three HTTP date forms are read; other spellings are no value, never a past date's zero wait (probes 89f F2, 89g F1)", () => {
  expect(retryAfterMs("30", now)).toBe(30_000);
  expect(retryAfterMs(" 0 ", now)).toBe(0);
  expect(retryAfterMs("Sun, 06 Dec 2026 12:00:30 GMT", now)).toBe(30_000);
  expect(retryAfterMs("Sunday, 06-Dec-26 12:01:00 GMT", now)).toBe(60_000);
  expect(retryAfterMs("Sun Dec  6 12:00:10 2026", now)).toBe(10_000);
  // A date already past: retry at once, as the sender said.
  expect(retryAfterMs("Sun, 06 Dec 2026 11:00:00 GMT", now)).toBe(0);
  for (const value of [
    "2.5",
    "-5",
    "30.5",
    "0x10",
    "1e3",
    "2026-12-06",
    "12/06/2026",
    "tomorrow",
    "",
    // A day's name before anything else Date.parse reads (probe 89g F1).
    "Mon 5",
    "Mon, 2.5",
    "Monday -5",
    "Fri 2001",
  ]) {
    expect([value, retryAfterMs(value, now)]).toEqual([value, undefined]);
  }
});
