/**
 * @module
 * Which signals stop the process gracefully (the service, and a backup in progress).
 */
import { readFileSync } from "node:fs";

/**
 * The signals that stop the service gracefully: SIGTERM, and SIGINT and SIGHUP unless the process
 * was started with them ignored (`nohup` ignores SIGHUP; a shell ignores SIGINT for a job started
 * with `&` from a script; a supervisor may choose to). Palisade reads its configuration
 * once and has nothing to reload, so a hang-up (a closed terminal, a `kill -HUP` sent for a reload)
 * stops it as SIGTERM does, draining, instead of the default exit that drops what is in flight and
 * the audit rows still queued (probe 30d F6). A handler would override `nohup`'s ignoring it, and
 * that service would stop with the terminal that started it: so an ignored SIGHUP stays ignored.
 */
export function stopSignals(status: string | null = readOwnStatus()): NodeJS.Signals[] {
  const hex = status?.match(/^SigIgn:\s*([0-9a-f]+)$/m)?.[1];
  const ignored = hex === undefined ? 0n : BigInt(`0x${hex}`);
  // Bit n - 1 of the mask is signal n. SIGTERM is always the stop; the two a terminal sends are
  // left alone when the process was started ignoring them.
  const terminal: [NodeJS.Signals, bigint][] = [
    ["SIGINT", 2n],
    ["SIGHUP", 1n],
  ];
  return [
    "SIGTERM",
    ...terminal
      .filter(([, number]) => ((ignored >> (number - 1n)) & 1n) === 0n)
      .map(([name]) => name),
  ];
}

/** /proc/self/status, where the kernel lists the signals this process ignores; null elsewhere. */
function readOwnStatus(): string | null {
  try {
    return readFileSync("/proc/self/status", "utf8");
  } catch {
    return null;
  }
}
