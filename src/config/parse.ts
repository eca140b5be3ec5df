/**
 * @module
 * Parsers for one variable each. Each takes the raw string and throws a ConfigError naming the
 * variable; none of them echoes the value, which may be a secret.
 */
import {
  coversEveryAddress,
  coversMostAddresses,
  formatAddress,
  formatRange,
  parseCidr,
  parseIp,
} from "../plugins/client-ip/address";
import { parseHost } from "../plugins/request-guard/host";
import { ConfigError } from "./error";
import { APP_ENVS, type AppEnv, LOG_LEVELS, type LogLevel } from "./profiles";

export function parseEnum<T extends string>(name: string, raw: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  throw new ConfigError(name, `must be one of ${allowed.join(", ")}`);
}

export function parseInteger(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(name, "must be a whole number");
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}`);
  return value;
}

/**
 * `APP_ENV`, or `ENVIRONMENT` as many deployments spell it; both set to different values is refused
 * rather than guessed at. Any case.
 */
export function parseAppEnv(env: Record<string, string | undefined>): AppEnv {
  const primary = env.APP_ENV?.trim().toLowerCase() || undefined;
  const alias = env.ENVIRONMENT?.trim().toLowerCase() || undefined;
  if (primary !== undefined && alias !== undefined && primary !== alias) {
    throw new ConfigError("ENVIRONMENT", "differs from APP_ENV; set one of them");
  }
  if (primary === undefined && alias !== undefined)
    return parseEnum("ENVIRONMENT", alias, APP_ENVS);
  return parseEnum("APP_ENV", primary ?? "development", APP_ENVS);
}

/**
 * The environment a start of the production executable reads: one that names no profile (neither
 * APP_ENV nor its alias ENVIRONMENT, or each only blank, as `APP_ENV=` in an env file or a
 * compose variable the host lacks gives it) is a production start. A blank APP_ENV is read as
 * unset by parseAppEnv, so left as it was it served the development profile with generated
 * secrets (probe 71a F1); an ENVIRONMENT of its own is honoured (71a F4).
 */
export function executableEnvironment(
  env: Record<string, string | undefined>,
): Record<string, string | undefined> {
  return namesProfile(env) ? env : { ...env, APP_ENV: "production" };
}

/** Whether APP_ENV or its alias ENVIRONMENT names a profile (is set and not blank). */
export function namesProfile(env: Record<string, string | undefined>): boolean {
  return Boolean(env.APP_ENV?.trim() || env.ENVIRONMENT?.trim());
}

/** Other tools' names for the log levels. */
const LOG_LEVEL_ALIASES: Record<string, LogLevel> = { warning: "warn", critical: "fatal" };

/** A log level name in any case, or WARNING / CRITICAL as Python's logging spells them. */
export function parseLogLevel(name: string, raw: string): LogLevel {
  const value = raw.trim().toLowerCase();
  return LOG_LEVEL_ALIASES[value] ?? parseEnum(name, value, LOG_LEVELS);
}

export function parseBoolean(name: string, raw: string): boolean {
  const value = raw.trim().toLowerCase();
  if (value === "true" || value === "1") return true;
  if (value === "false" || value === "0") return false;
  throw new ConfigError(name, "must be true or false");
}

export function parseList(raw: string): string[] {
  return raw
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

const ISO_CURRENCIES = new Set(
  Intl.supportedValuesOf("currency").map((code) => code.toLowerCase()),
);

/** A comma list of ISO 4217 currency codes, returned lower case as Stripe spells them. */
export function parseCurrencies(name: string, raw: string): string[] {
  const codes = [...new Set(parseList(raw).map((code) => code.toLowerCase()))];
  if (codes.length === 0) throw new ConfigError(name, "must name at least one currency");
  for (const code of codes) {
    if (!/^[a-z]{3}$/.test(code) || !ISO_CURRENCIES.has(code)) {
      throw new ConfigError(name, `"${code.slice(0, 8)}" is not an ISO 4217 currency code`);
    }
  }
  return codes;
}

/** Named ranges, as proxy-addr and Express accept them. */
const NAMED_RANGES: Record<string, string[]> = {
  loopback: ["127.0.0.0/8", "::1/128"],
  linklocal: ["169.254.0.0/16", "fe80::/10"],
  uniquelocal: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
};

/** A comma list of CIDRs, bare addresses (one host) or the names loopback, linklocal, uniquelocal. */
export function parseCidrList(name: string, raw: string): string[] {
  const cidrs: string[] = [];
  for (const item of parseList(raw)) {
    const named = NAMED_RANGES[item.toLowerCase()];
    if (named) {
      cidrs.push(...named);
      continue;
    }
    // Addresses are read by the one strict parser the request path uses (plugins/client-ip/address):
    // canonical dotted-decimal IPv4 or IPv6, never inet_aton's octal, hex or short forms.
    if (item.includes("/")) {
      const range = parseCidr(item);
      if (range === null) {
        throw new ConfigError(
          name,
          `has an invalid CIDR "${item}" (expected a canonical IPv4 or IPv6 address, /bits)`,
        );
      }
      cidrs.push(formatRange(range));
    } else {
      const address = parseIp(item);
      if (address === null) {
        throw new ConfigError(
          name,
          `has an invalid address "${item}" (expected canonical dotted-decimal IPv4 or IPv6)`,
        );
      }
      cidrs.push(`${formatAddress(address)}/${address.kind() === "ipv4" ? 32 : 128}`);
    }
  }
  return cidrs;
}

/**
 * ALLOWED_HOSTS: host names (or IP literals, IPv6 in brackets) this service answers for, without
 * ports, normalised as the Host check normalises a request's (lower case, no trailing dot).
 */
export function parseAllowedHosts(name: string, raw: string): string[] {
  const hosts: string[] = [];
  for (const item of parseList(raw)) {
    if (item === "*") {
      throw new ConfigError(
        name,
        "must list host names; * is refused (leave it unset outside production)",
      );
    }
    const host = parseHost(item);
    if (host === null || host.port !== null) {
      throw new ConfigError(
        name,
        `has "${item}", which is not a host name (no scheme, port or path)`,
      );
    }
    hosts.push(host.name);
  }
  return hosts;
}

export type TrustProxy =
  | { kind: "none" }
  | { kind: "hops"; hops: number }
  | { kind: "cidrs"; cidrs: string[] };

export function parseTrustProxy(name: string, raw: string | undefined): TrustProxy {
  if (raw === undefined || raw.trim() === "" || raw.trim() === "0") return { kind: "none" };
  const trimmed = raw.trim();
  if (/^\d+$/.test(trimmed)) return { kind: "hops", hops: parseInteger(name, trimmed, 0, 32) };
  // "true" in Express trusts every hop, which lets any client choose its address.
  if (/^(true|all|\*)$/i.test(trimmed)) {
    throw new ConfigError(
      name,
      "must be a number of hops or a list of CIDRs, not trust-everything",
    );
  }
  const cidrs = parseCidrList(name, trimmed);
  if (cidrs.length === 0) return { kind: "none" };
  refuseCoveringMost(name, cidrs, {
    every: "trusts everyone",
    most: "trusts nearly everyone",
    instead: "list only your proxies' ranges",
  });
  return { kind: "cidrs", cidrs };
}

/**
 * Ranges that are never rate limited. A list covering every address of a family turns every limit
 * off for everyone of it (and with them the automatic blocks they feed), which no allow list
 * means: refused, as `TRUST_PROXY` refuses trusting everyone.
 */
export function parseAllowCidrs(name: string, raw: string): string[] {
  const cidrs = parseCidrList(name, raw);
  refuseCoveringMost(name, cidrs, {
    every: "turns every rate limit off",
    most: "turns rate limits off for nearly everyone",
    instead: "list only the ranges to exempt",
  });
  return cidrs;
}

/**
 * Refuses a list of ranges (`TRUST_PROXY`, `RATE_LIMIT_ALLOW_CIDRS`) that covers every address of
 * a family, or too much of the addresses clients come from (client-ip/address), saying what that
 * would do and what to list instead.
 */
function refuseCoveringMost(
  name: string,
  cidrs: readonly string[],
  said: { every: string; most: string; instead: string },
): void {
  const ranges = cidrs.map((cidr) => parseCidr(cidr)!);
  const everyone = coversEveryAddress(ranges);
  if (everyone !== null) {
    throw new ConfigError(
      name,
      `covers every ${everyone} address, which ${said.every}; ${said.instead}`,
    );
  }
  const most = coversMostAddresses(ranges);
  if (most !== null) {
    const measured =
      most === "IPv4"
        ? "half of them, counting NAT64's"
        : "half of the global ones, or a range wider than /20";
    throw new ConfigError(
      name,
      `covers too much of the ${most} addresses clients come from (${measured}), which ${said.most}; ${said.instead}`,
    );
  }
}

/** A browser origin: scheme, host and optional port, nothing else. */
export function parseOrigins(name: string, raw: string, requireHttps: boolean): string[] {
  const origins: string[] = [];
  for (const item of parseList(raw)) {
    if (item === "*") throw new ConfigError(name, "must list origins explicitly; * is refused");
    if (item === "null") throw new ConfigError(name, 'must not allow the "null" origin');
    let url: URL;
    try {
      url = new URL(item);
    } catch {
      throw new ConfigError(name, `has an invalid origin "${item}"`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new ConfigError(name, `has a non-web origin "${item}"`);
    }
    const written = item.replace(/\/$/, "");
    if (url.origin !== written && url.origin === written.toLowerCase()) {
      // A browser sends the scheme and host in lower case, and origins are compared as sent.
      throw new ConfigError(
        name,
        `has "${item}"; a browser sends it in lower case, as "${url.origin}": write it so`,
      );
    }
    if (url.origin !== written) {
      throw new ConfigError(
        name,
        `has "${item}", which is not a bare origin (scheme://host[:port])`,
      );
    }
    if (url.hostname.includes("*")) throw new ConfigError(name, "must not use wildcard hosts");
    if (requireHttps && url.protocol !== "https:") {
      throw new ConfigError(name, `has "${item}"; only https origins are allowed in this profile`);
    }
    origins.push(url.origin);
  }
  return origins;
}

export function parseUrl(name: string, raw: string, protocols: readonly string[]): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, "must be a URL");
  }
  if (!protocols.includes(url.protocol)) {
    throw new ConfigError(
      name,
      `must use ${protocols.map((p) => p.replace(":", "")).join(" or ")}`,
    );
  }
  return raw.replace(/\/$/, "");
}

/** A port, or a range `first-last` (at most 1024 ports) from which each process takes a free one. */
export function parsePortRange(name: string, raw: string): { first: number; last: number } {
  const match = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(raw);
  if (!match) throw new ConfigError(name, "must be a port (9100) or a range of ports (9100-9103)");
  const first = parseInteger(name, match[1]!, 1, 65535);
  const last = match[2] === undefined ? first : parseInteger(name, match[2], 1, 65535);
  if (last < first || last - first >= 1024) {
    throw new ConfigError(name, "must be a range of at most 1024 ports, lowest first");
  }
  return { first, last };
}

/** A decimal fraction between 0 and 1 (a sample rate). */
export function parseFraction(name: string, raw: string): number {
  const value = /^\s*(?:\d+\.?\d*|\.\d+)\s*$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(value >= 0 && value <= 1)) throw new ConfigError(name, "must be a number from 0 to 1");
  return value;
}

/**
 * Whether a listen address only accepts connections from this host: `localhost`, 127.0.0.0/8 or
 * `::1` (in canonical spelling; anything else, `0.0.0.0` included, is reachable from outside).
 */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === "localhost") return true;
  const address = parseIp(host.replace(/^\[(.*)\]$/, "$1"));
  return address !== null && address.range() === "loopback";
}

/**
 * SENTRY_DSN as the Sentry SDK accepts it: `http(s)://public_key@host[:port][/path]/project_id`,
 * the key of word characters and the project id digits. Checked here because the SDK prints a DSN
 * it rejects on the console, key and all, and then reports nothing. The error never repeats the
 * value (it holds the key).
 */
const SENTRY_DSN =
  /^https?:\/\/\w+(?::\w*)?@(?:\[[:.%\w]+\]|[\w.-]+)(?::([0-9]{1,5}))?\/(?:[^?#\s]*\/)?[0-9]+$/;

export function parseSentryDsn(name: string, raw: string | undefined): string | null {
  if (raw === undefined) return null;
  const value = raw.replace(/\/$/, "");
  const match = SENTRY_DSN.exec(value);
  const port = match?.[1];
  // And a URL as WHATWG reads it: an IPv6 host with a zone id (`[fe80::1%eth0]`) passed the pattern
  // and threw, DSN and key in the stack, where the https check read it (probe 45a F1).
  if (
    !match ||
    (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) ||
    !URL.canParse(value)
  ) {
    throw new ConfigError(
      name,
      "must be a Sentry DSN, http(s)://public_key@host[:port]/project_id (a numeric project id)",
    );
  }
  return value;
}
