import { firstLine } from "../../error-line";
import { logSafe } from "../../logging/logger";
import type { DependencyState, ReadyResponse } from "./model";

/**
 * A readiness check: resolves when the dependency answers, throws or rejects when it does not.
 * An optional part that is switched off returns `"not_configured"`: reported, and not a failure.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: the checks that pass return nothing.
export type ReadinessCheck = () => void | "not_configured" | Promise<void | "not_configured">;

/**
 * Runs every check. `scrub` (the secret scrubber) cleans a failure's message before it is shown:
 * `/ready` answers anyone, and a driver's message is text Palisade does not write.
 */
export async function runChecks(
  checks: Record<string, ReadinessCheck>,
  scrub: (text: string) => string = (text) => text,
): Promise<ReadyResponse> {
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]): Promise<[string, DependencyState]> => {
      const started = performance.now();
      try {
        const state = (await check()) === "not_configured" ? "not_configured" : "up";
        return [name, { status: state, latencyMs: elapsed(started) }];
      } catch (error) {
        // The first line of a driver's message ("disk I/O error") tells the operator enough;
        // scrubbed, escaped and cut, as client-facing text from elsewhere always is.
        const message = logSafe(firstLine(error), scrub)!;
        return [name, { status: "down", latencyMs: elapsed(started), error: message }];
      }
    }),
  );
  const ready = entries.every(([, state]) => state.status !== "down");
  return { status: ready ? "ready" : "unavailable", checks: Object.fromEntries(entries) };
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 1000) / 1000;
}
