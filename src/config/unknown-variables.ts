/**
 * @module
 * Variables that look like Palisade's but are not: `JWT_SECRET` set where `JWT_SECRET_KEY` was
 * meant is silently ignored otherwise, and in development a generated secret hides the mistake.
 * Only names with one of Palisade's own prefixes are looked at, so the rest of the environment
 * (PATH, HOME, other programs' settings) is left alone.
 */
import { SECRET_VARIABLES, VARIABLES } from "./variables";

const PREFIXES = [
  "APP_",
  "JWT_",
  "CSRF_",
  "RATE_LIMIT_",
  "IP_BLOCK_",
  "ACCESS_TOKEN_",
  "REFRESH_TOKEN_",
  "CORS_",
  "OPENAI_",
  "STRIPE_",
  "WHATSAPP_",
  "SENTRY_",
  "METRICS_",
  "AUDIT_",
  "CHAT_",
  "PAYMENT_",
  "OPENAPI_",
  "ALLOWED_",
  "TRUST_",
  "API_KEY",
  // DATABASE_PATH_FILE, as if the path were a secret, went unnoticed (probe 35c I5); not all of
  // DATABASE_, which other programs' DATABASE_URL shares.
  "DATABASE_PATH",
];

const KNOWN = new Set([
  ...VARIABLES.map((variable) => variable.name),
  ...SECRET_VARIABLES.map((name) => `${name}_FILE`),
]);

/** Levenshtein distance: how many single-character edits turn one name into the other. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

export function closestVariable(name: string): string {
  let best = "";
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const known of KNOWN) {
    const d = distance(name, known);
    if (d < bestDistance) {
      best = known;
      bestDistance = d;
    }
  }
  return best;
}

export function findUnknownVariables(
  env: Record<string, string | undefined>,
): { name: string; suggestion: string }[] {
  const unknown: { name: string; suggestion: string }[] = [];
  for (const name of Object.keys(env).sort()) {
    if (KNOWN.has(name) || !PREFIXES.some((prefix) => name.startsWith(prefix))) continue;
    unknown.push({ name, suggestion: closestVariable(name) });
  }
  return unknown;
}
