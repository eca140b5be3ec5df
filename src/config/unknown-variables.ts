/**
 * @module
 * Variables that look like Palisade's but are not: `JWT_SECRET` set where `JWT_SECRET_KEY` was
 * meant is silently ignored otherwise, and in development a generated secret hides the mistake.
 * Only names with one of Palisade's own prefixes, or a known name's near misses, are looked at,
 * so the rest of the environment (PATH, HOME, other programs' settings) is left alone.
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
  // TRUSTED_PROXIES and TRUSTED_PROXY are other frameworks' names for TRUST_PROXY: lost, every
  // client behind the proxy would share its address's limits and blocks (probe 82a F3). Not all
  // of TRUST: TRUSTED_CA_FILE, TRUSTSTORE_PATH are other programs' (probe 82e).
  "TRUST_",
  "TRUSTED_PROX",
  "ALERT_",
  "WAL_",
  "API_KEY",
  // DATABASE_PATH_FILE, as if the path were a secret, went unnoticed (probe 35c I5); not all of
  // DATABASE_, which other programs' DATABASE_URL shares.
  "DATABASE_PATH",
];

const KNOWN = new Set([
  ...VARIABLES.map((variable) => variable.name),
  ...SECRET_VARIABLES.map((name) => `${name}_FILE`),
]);

/**
 * Levenshtein distance: how many single-character edits turn one name into the other; given up
 * as soon as a row of the table is past `max` (then some number past it), since every name of the
 * environment is compared with the known ones of about its length at each start.
 */
function distance(a: string, b: string, max = Number.POSITIVE_INFINITY): number {
  let previous = new Int32Array(b.length + 1);
  let current = new Int32Array(b.length + 1);
  for (let j = 0; j <= b.length; j++) previous[j] = j;
  for (let i = 1; i <= a.length; i++) {
    current[0] = i;
    let least = i;
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1);
      const cell = Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution);
      current[j] = cell;
      if (cell < least) least = cell;
    }
    if (least > max) return least;
    [previous, current] = [current, previous];
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

/**
 * A name a character or two from one of Palisade's, under no prefix of its own: `LOG_LEVELS`,
 * `METRIC_TOKEN`, `PAYMENTS_MAX_AMOUNT` (probe 82a F3). Names of eight characters or more only, so
 * that short ones other programs set (`HOST_IP`, `NODE_ENV`) are not read as a miss of ours.
 */
const NEAR_MISS_DISTANCE = 2;
const NEAR_MISS_MIN_LENGTH = 8;

function isNearMiss(name: string): boolean {
  if (name.length < NEAR_MISS_MIN_LENGTH) return false;
  // Cut into one piece more than the edits allowed, a name that many edits from another keeps at
  // least one piece whole in it: only such names are compared in full (every start runs this).
  const pieces: string[] = [];
  const size = Math.ceil(name.length / (NEAR_MISS_DISTANCE + 1));
  for (let at = 0; at < name.length; at += size) pieces.push(name.slice(at, at + size));
  for (
    let length = name.length - NEAR_MISS_DISTANCE;
    length <= name.length + NEAR_MISS_DISTANCE;
    length++
  ) {
    for (const known of KNOWN_BY_LENGTH.get(length) ?? []) {
      if (!pieces.some((piece) => known.includes(piece))) continue;
      if (distance(name, known, NEAR_MISS_DISTANCE) <= NEAR_MISS_DISTANCE) return true;
    }
  }
  return false;
}

const KNOWN_BY_LENGTH = new Map<number, string[]>();
for (const known of KNOWN) {
  KNOWN_BY_LENGTH.set(known.length, [...(KNOWN_BY_LENGTH.get(known.length) ?? []), known]);
}

export function findUnknownVariables(
  env: Record<string, string | undefined>,
): { name: string; suggestion: string }[] {
  const unknown: { name: string; suggestion: string }[] = [];
  for (const name of Object.keys(env).sort()) {
    if (KNOWN.has(name)) continue;
    if (PREFIXES.some((prefix) => name.startsWith(prefix)) || isNearMiss(name)) {
      unknown.push({ name, suggestion: closestVariable(name) });
    }
  }
  return unknown;
}
