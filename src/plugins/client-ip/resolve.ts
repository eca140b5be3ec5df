/**
 * @module
 * Decides the client's address. Without TRUST_PROXY the socket peer is the client and
 * `X-Forwarded-For` is ignored: any client can write that header. With TRUST_PROXY the chain
 * [X-Forwarded-For…, peer] is read right to left, since each proxy appends the address it saw:
 * with N hops, the address N steps left of the peer; with CIDRs, the first address that is not a
 * trusted proxy. Every address goes through parseIp (./address): a non-canonical spelling
 * (`010.1.1.1`, `127.1`, a zone id) is not an address. An entry in the part of the chain we read
 * that is not an address ends the walk: the client is the trusted hop that handed it over, never a
 * guess at what the spelling meant.
 */
import type ipaddr from "ipaddr.js";
import type { TrustProxy } from "../../config";
import { trimOptionalWhitespace } from "../../optional-whitespace";
import { type Address, formatAddress, parseCidr, parseIp, type Range } from "./address";

export type { Address } from "./address";
export { formatAddress } from "./address";

/** A TrustProxy from config, with its CIDRs parsed once. */
export type CompiledTrust =
  | { kind: "none" }
  | { kind: "hops"; hops: number }
  | { kind: "cidrs"; ranges: Range[] };

export function compileTrust(trust: TrustProxy): CompiledTrust {
  if (trust.kind !== "cidrs") return trust;
  return { kind: "cidrs", ranges: trust.cidrs.map(parseRange) };
}

/** A range from config, which has already been validated by the same parser. */
export function parseRange(cidr: string): Range {
  const range = parseCidr(cidr);
  if (range === null) throw new Error(`not a CIDR range: ${cidr}`);
  return range;
}

export function inRanges(address: Address, ranges: readonly Range[]): boolean {
  for (const range of ranges) {
    if (address.kind() === range[0].kind() && address.match(range)) return true;
  }
  return false;
}

/** A TCP port, 1–65535, in decimal without leading zeros. */
const PORT =
  "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
const V4_WITH_PORT = new RegExp(`^([0-9.]+):${PORT}$`);
const BRACKETED = new RegExp(`^\\[([^\\]]+)\\](?::${PORT})?$`);

/**
 * Parses one `X-Forwarded-For` entry as proxies write it: bare, `v4:port`, `[v6]` or
 * `[v6]:port`, with the header's optional whitespace (space, tab) around it. The address itself
 * goes through parseIp.
 */
export function parseForwardedEntry(raw: string): Address | null {
  const text = trimOptionalWhitespace(raw);
  // Without a colon it can only be a bare IPv4 address (or nothing): the common entry, read without
  // trying the port spellings.
  if (!text.includes(":")) return parseIp(text);
  const bracketed = BRACKETED.exec(text);
  // Brackets are IPv6's way to carry a port (RFC 3986): "[1.2.3.4]" is no address a proxy writes.
  if (bracketed) return bracketed[1]!.includes(":") ? parseIp(bracketed[1]!) : null;
  const withPort = V4_WITH_PORT.exec(text);
  return parseIp(withPort ? withPort[1]! : text);
}

/**
 * Trusted proxies walked through at most, right to left: past them, the last one reached is the
 * client. No deployment chains this many proxies, and each entry is an address parsed (2–6 µs):
 * a sender within the trusted ranges that wrote 2,000 of them made every request, `/health`
 * included (never limited), cost 10–15 ms before any limit could refuse it (probe 88c F1).
 */
export const MAX_TRUSTED_PROXIES = 32;

export interface ClientAddressInput {
  /** The socket peer's address; null when unknown (no server, e.g. a test calling app.handle). */
  peer: string | null;
  /** The raw X-Forwarded-For header, all occurrences joined with commas. */
  forwardedFor: string | null;
}

export const UNKNOWN_CLIENT = "unknown";

export function resolveClientIp(input: ClientAddressInput, trust: CompiledTrust): string {
  const address = resolveClientAddress(input, trust);
  return address === null ? UNKNOWN_CLIENT : formatAddress(address);
}

/**
 * The key a client is counted and blocked under: the IPv4 address, or the IPv6 /64 prefix, since
 * a single host is usually given a whole /64 and can rotate through it at will. Except an address
 * in RFC 6052's well-known prefix, `64:ff9b::/96`, or RFC 8215's local-use `64:ff9b:1::/48` (see
 * isTranslatedIpv4): that is an IPv4 client translated to IPv6 (NAT64,
 * SIIT-DC, in front of an IPv6-only service), one host per address, so it is keyed alone (/128);
 * under its /64 every IPv4 client of the translator would share one limit and one block (re-probe
 * 15c F6).
 */
export function clientKeyOf(address: Address | null): string {
  if (address === null) return UNKNOWN_CLIENT;
  if (address.kind() === "ipv4") return address.toString();
  if (isTranslatedIpv4(address as ipaddr.IPv6)) return `${formatAddress(address)}/128`;
  return `${prefixText((address as ipaddr.IPv6).parts, 4)}/64`;
}

/**
 * Whether an IPv6 address is an IPv4 one translated: in RFC 6052's well-known prefix,
 * `64:ff9b::/96`, or RFC 8215's local-use one, `64:ff9b:1::/48`, where a network's own translator
 * puts IPv4 hosts (probe 90a F6: keyed by /64 there, one host's block refused its neighbours).
 */
function isTranslatedIpv4(address: ipaddr.IPv6): boolean {
  const all = address.parts;
  if (all[0] !== 0x64 || all[1] !== 0xff9b) return false;
  return all[2] === 1 || all.slice(2, 6).every((part) => part === 0);
}

/** The first `groups` of an IPv6 address's parts, the rest zero, in RFC 5952 form. */
function prefixText(parts: readonly number[], groups: number): string {
  // Written out, not parsed and formatted again (a parse a new client, twice with its /48): the
  // zeros after the prefix are at least four groups, longer than any run of zeros inside its
  // three or four, so RFC 5952 compresses them and whatever zero groups end the prefix.
  let last = groups;
  while (last > 0 && parts[last - 1] === 0) last--;
  let text = "";
  for (let i = 0; i < last; i++) text += `${i === 0 ? "" : ":"}${parts[i]!.toString(16)}`;
  return `${text}::`;
}

/**
 * The IPv6 /48 (a site's usual assignment: 65,536 /64s) that a client's /64 key lies in, or null
 * when its key is not a /64 (IPv4, an IPv4 address translated to IPv6) or the /48 is no site
 * (isSite). Automatic blocks escalate
 * to it once several of its /64s are blocked: a client holding a /48 otherwise earned a block, and
 * its audit row, for every /64 it rotated through (probe 89d F3).
 */
export function siteKeyOf(address: Address | null): string | null {
  if (address === null || address.kind() !== "ipv6") return null;
  const parts = (address as ipaddr.IPv6).parts;
  return isSite(parts) ? `${prefixText(parts, 3)}/48` : null;
}

/**
 * Whether the /48 of these parts is a site, blocked whole once enough of it is: not one of
 * `::/16` (loopback `::1`, the IPv4-compatible `::10.0.0.1`: no one's assignment) nor of the
 * translation prefixes, `64:ff9b::/48` and `64:ff9b:1::/48`, whose IPv4 clients are keyed alone
 * (probes 90j F3, 90m F5: the admin route refused such a /48 that an automatic block could make).
 */
function isSite(parts: readonly number[]): boolean {
  return parts[0] !== 0 && !(parts[0] === 0x64 && parts[1] === 0xff9b && parts[2]! <= 1);
}

/**
 * What an admin's block of `text` is stored under: an address's client key (an IPv6 address's
 * /64), or an IPv6 /48 written as one (`2001:db8:6::/48`, any address inside it), which refuses
 * every /64 in it as an automatic /48 block does; null for anything else: other prefix lengths are
 * no subject the request path reads, and a /48 written with an IPv4-mapped address
 * (`::ffff:10.0.0.0/48`) would be `::/48`, no IPv4 client (probe 90h F5).
 */
export function blockSubjectOf(text: string): string | null {
  const address = parseIp(text);
  if (address !== null) return clientKeyOf(address);
  if (!text.endsWith("/48")) return null;
  const written = parseIp(text.slice(0, -3));
  if (written === null || written.kind() !== "ipv6") return null;
  return siteKeyOf(written);
}

/** The /48 a client key (an IPv6 /64) lies in, or null (siteKeyOf). */
export function siteOfKey(clientKey: string): string | null {
  return clientKey.endsWith("/64") ? siteKeyOf(parseIp(clientKey.slice(0, -3))) : null;
}

/**
 * The network a client key belongs to, for a bound wider than one client: an IPv4 address's /24,
 * an IPv6 /64's /48 (a site's usual assignment), and for an IPv6 address that carries an IPv4 one
 * (translated, `64:ff9b::/96`; 6to4, `2002::/16`) that IPv4 address's /24. Anything else
 * (`unknown`) is its own network.
 */
export function networkKeyOf(clientKey: string): string {
  if (clientKey === UNKNOWN_CLIENT) return clientKey;
  if (!clientKey.includes(":")) {
    const octets = clientKey.split(".");
    return octets.length === 4 ? `${octets[0]}.${octets[1]}.${octets[2]}.0/24` : clientKey;
  }
  const slash = clientKey.lastIndexOf("/");
  const address = parseIp(slash === -1 ? clientKey : clientKey.slice(0, slash));
  if (address === null || address.kind() !== "ipv6") return clientKey;
  const parts = (address as ipaddr.IPv6).parts;
  if (clientKey.endsWith("/128")) {
    const [a, b, c] = [parts[6]! >> 8, parts[6]! & 0xff, parts[7]! >> 8];
    return `${a}.${b}.${c}.0/24`;
  }
  // 6to4 (2002::/16) gives every IPv4 host a /48 of its own, its address in bits 16–47: its
  // network is that IPv4 address's /24, or 16 hosts of one /24 filled the budget (probe 31b F7).
  if (parts[0] === 0x2002) {
    const [a, b, c] = [parts[1]! >> 8, parts[1]! & 0xff, parts[2]! >> 8];
    return `${a}.${b}.${c}.0/24`;
  }
  return `${prefixText(parts, 3)}/48`;
}

export function resolveClientAddress(
  input: ClientAddressInput,
  trust: CompiledTrust,
  /** Given, receives each trusted proxy the request came through (the peer first), in order. */
  proxies?: Address[],
): Address | null {
  const peer = input.peer === null ? null : parseIp(input.peer);
  if (peer === null) return null;
  if (trust.kind === "none" || !input.forwardedFor) return peer;

  const forwarded = input.forwardedFor.split(",");
  if (trust.kind === "hops") {
    // Each trusted hop accounts for one entry, from the right; past the list's start the leftmost
    // parseable entry is the best the chain can tell.
    let client = peer;
    for (let step = 1; step <= trust.hops && step <= forwarded.length; step++) {
      const next = parseForwardedEntry(forwarded[forwarded.length - step]!);
      if (next === null) break;
      proxies?.push(client);
      client = next;
    }
    return client;
  }

  let client = peer;
  const last = Math.max(0, forwarded.length - MAX_TRUSTED_PROXIES);
  for (let index = forwarded.length - 1; index >= last; index--) {
    if (!inRanges(client, trust.ranges)) break;
    const next = parseForwardedEntry(forwarded[index]!);
    // A malformed entry was written by the trusted proxy to its right; that proxy is what we know.
    if (next === null) break;
    proxies?.push(client);
    client = next;
  }
  return client;
}
