/**
 * The vector selectors of a PromQL expression (`metric{label="v"}`), found by a small scanner:
 * Prometheus 2.42 has no parse endpoint, and the expressions here are ours (functions, aggregations
 * with `by`, binary operators, range windows), not arbitrary PromQL.
 */

/** What Grafana substitutes for `$__rate_interval`: 4 scrapes at least; here 1s scrapes. */
export const RATE_INTERVAL = "30s";

export interface Selector {
  name: string;
  /** The selector as written, e.g. `http_requests_total{status=~"5.."}`. */
  text: string;
}

const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "inf", "nan"]);
const GROUPING = /\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g;
const CANDIDATE = /(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?/g;

/** Grafana's variables replaced by what a query against Prometheus needs. */
export function substituteGrafanaVariables(expr: string): string {
  return expr.replaceAll("$__rate_interval", RATE_INTERVAL);
}

export function metricSelectors(expr: string): Selector[] {
  const source = substituteGrafanaVariables(expr).replace(GROUPING, "");
  const found: Selector[] = [];
  for (const match of source.matchAll(CANDIDATE)) {
    const name = match[1]!;
    const end = match.index! + match[0].length;
    if (source.slice(end).trimStart().startsWith("(")) continue; // a function or aggregation
    if (KEYWORDS.has(name.toLowerCase())) continue;
    found.push({ name, text: `${name}${match[2] ?? ""}` });
  }
  return found;
}
