/**
 * @module
 * The access line as one string, in the order and spelling `JSON.stringify` gave the object it
 * replaces: strings JSON-escaped, an absent field left out. Building the object, stringifying it
 * and scrubbing the whole line again cost about twice this on every request.
 */

export interface AccessLineFields {
  level: string;
  time: string;
  service: string;
  requestId: string;
  method: string;
  route: string;
  path: string | undefined;
  status: number;
  durationMs: number;
  clientIp: string;
  userAgent: string | undefined;
}

const text = JSON.stringify;

export function accessLine(f: AccessLineFields): string {
  return (
    `{"level":${text(f.level)},"time":${text(f.time)},"service":${text(f.service)}` +
    `,"requestId":${text(f.requestId)},"method":${text(f.method)},"route":${text(f.route)}` +
    (f.path === undefined ? "" : `,"path":${text(f.path)}`) +
    `,"status":${text(f.status)},"durationMs":${text(f.durationMs)},"clientIp":${text(f.clientIp)}` +
    (f.userAgent === undefined ? "" : `,"userAgent":${text(f.userAgent)}`) +
    `,"msg":"request"}\n`
  );
}

/** `new Date().toISOString()`, formatted once per millisecond rather than once per line. */
export function isoTimeCache(now: () => number = Date.now): () => string {
  let last = Number.NaN;
  let formatted = "";
  return function isoTime() {
    const ms = now();
    if (ms !== last) {
      last = ms;
      formatted = new Date(ms).toISOString();
    }
    return formatted;
  };
}

/** How many distinct user agents one access log remembers the logged form of. */
export const USER_AGENT_CACHE_LIMIT = 256;

export interface TextMemo {
  (text: string | null): string | undefined;
  /** How many texts are remembered now (at most the limit). */
  readonly size: number;
}

/**
 * `safe(text)` remembered per exact text: a client sends the same User-Agent on every request, and
 * scrubbing it for every secret spelling is most of the line's cost. Keyed by the whole value, so
 * another text is computed on its own; emptied when full, so a flood of distinct values cannot
 * grow it.
 */
export function memoizeText(
  safe: (text: string) => string | undefined,
  limit = USER_AGENT_CACHE_LIMIT,
): TextMemo {
  const memo = new Map<string, string | undefined>();
  const cached = function safeTextOnce(text: string | null): string | undefined {
    if (text === null) return undefined;
    if (memo.has(text)) return memo.get(text);
    const result = safe(text);
    if (memo.size >= limit) memo.clear();
    memo.set(text, result);
    return result;
  };
  return Object.defineProperty(cached, "size", { get: () => memo.size }) as TextMemo;
}
