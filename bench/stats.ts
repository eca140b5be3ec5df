/**
 * @module
 * Medians and spread of interleaved rounds. A figure is reported as the median of its rounds; its
 * spread is (max − min) / median, and a spread above 15 % marks the figure as unsteady (the
 * machine was busy, or the rounds were too short to settle).
 */

export const SPREAD_WARNING = 0.15;

export interface Summary {
  median: number;
  min: number;
  max: number;
  /** (max − min) / median; 0 with one round. */
  spread: number;
  rounds: number[];
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function summarize(values: readonly number[]): Summary {
  const m = median(values);
  const min = Math.min(...values);
  const max = Math.max(...values);
  return { median: m, min, max, spread: m > 0 ? (max - min) / m : 0, rounds: [...values] };
}

export const fmt = (n: number) =>
  Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: 0 }) : "–";

/** The spread of a figure's rounds, as printed next to its median. */
export const pct = (spread: number) => `(spread ${(spread * 100).toFixed(0)}%)`;

export const mb = (kb: number) => `${(kb / 1024).toFixed(0)} MB`;
