/**
 * @module
 * Lines a lasting fault would write for every request: the limiter's store down (Redis stopped, the
 * database file full) or the database refusing writes. Each such line carries the error and its
 * stack, ~700 bytes, two to three times the request's access line, so a flood of requests during
 * the fault filled the disk that much faster, with the same line again and again (probe 29d F5).
 *
 * The caller names what repeats (a key its own code chooses, never client text). The first line
 * of a key is written whole; the others within the next interval are only counted, and one line at
 * the interval's end says how many there were and the last one's request id. A key that stays
 * quiet for a whole interval is written whole again at its next line. Every such request still
 * has its access line (with its request id and status) and its metrics.
 */
import { firstLine } from "../error-line";
import type { LevelName } from "./logger";

/** How long a key's repeats are counted instead of written, from its line written whole. */
export const REPEAT_INTERVAL_MS = 10_000;

/**
 * The most keys counted at once. Keys come from the code (a message, a route pattern, an error's
 * name), so this is far above what any fault makes; past it lines are written whole.
 */
export const MAX_REPEAT_KEYS = 1024;

export interface RepeatSummary {
  key: string;
  level: LevelName;
  /** Lines of `key` counted, not written, in the interval that ended. */
  count: number;
  /** How long they were counted over: the interval, or less when a shutdown ends it early. */
  intervalMs: number;
  /** The request id the last of them carried, if any. */
  lastRequestId: string | undefined;
}

export interface RepeatGate {
  /** Whether this line of `key` is written (true), or only counted (false). */
  admit(key: string, level: LevelName, requestId: string | undefined): boolean;
  /** Writes the summaries of every key with lines counted (at shutdown) and forgets every key. */
  flush(): void;
}

interface Counting {
  level: LevelName;
  count: number;
  lastRequestId: string | undefined;
  timer: ReturnType<typeof setTimeout>;
  /** When this interval began (performance.now()). */
  since: number;
}

export function createRepeatGate(options: {
  /** Writes the line that says how many lines of a key were counted. */
  summarize: (summary: RepeatSummary) => void;
  intervalMs?: number;
  maxKeys?: number;
}): RepeatGate {
  const { summarize } = options;
  const intervalMs = options.intervalMs ?? REPEAT_INTERVAL_MS;
  const maxKeys = options.maxKeys ?? MAX_REPEAT_KEYS;
  const counting = new Map<string, Counting>();

  const summarizeOf = (key: string, state: Counting, elapsedMs = intervalMs) => {
    summarize({
      key,
      level: state.level,
      count: state.count,
      intervalMs: elapsedMs,
      lastRequestId: state.lastRequestId,
    });
  };
  const schedule = (key: string) => {
    const timer = setTimeout(() => intervalEnded(key), intervalMs);
    timer.unref?.();
    return timer;
  };
  const intervalEnded = (key: string) => {
    const state = counting.get(key);
    if (state === undefined) return;
    if (state.count === 0) {
      counting.delete(key);
      return;
    }
    summarizeOf(key, state);
    // Still repeating: the next interval is counted too, so a fault that lasts writes one line
    // an interval, not one whole line and one summary.
    state.count = 0;
    state.lastRequestId = undefined;
    state.since = performance.now();
    state.timer = schedule(key);
  };

  return {
    admit(key, level, requestId) {
      const state = counting.get(key);
      if (state !== undefined) {
        state.count += 1;
        state.lastRequestId = requestId;
        // The summary is written at the most severe level it counts.
        if (level === "error" || level === "fatal") state.level = level;
        return false;
      }
      if (counting.size < maxKeys) {
        counting.set(key, {
          level,
          count: 0,
          lastRequestId: undefined,
          timer: schedule(key),
          since: performance.now(),
        });
      }
      return true;
    },
    flush() {
      for (const [key, state] of counting) {
        clearTimeout(state.timer);
        const elapsed = Math.min(intervalMs, Math.ceil(performance.now() - state.since));
        if (state.count > 0) summarizeOf(key, state, elapsed);
      }
      counting.clear();
    },
  };
}

/**
 * What fault an error is, for a repeat's key: its name, code and first message line with the
 * numbers taken out (a timeout's milliseconds, a count), at most 80 characters. So a fault that
 * changes while lines repeat (Redis back up but full: "OOM" after "Connection is closed") is
 * written whole, not counted under the first (probe 30c F1). Only for errors the service's own
 * stores and code raise: a message that could quote a client never goes in a key.
 */
export function faultKind(error: unknown): string {
  if (!(error instanceof Error)) return typeof error;
  const code = (error as { code?: unknown }).code;
  const text = `${error.name}${typeof code === "string" || typeof code === "number" ? ` ${code}` : ""}: ${firstLine(error)}`;
  return text.replace(/\d+/g, "#").slice(0, 80);
}
