/**
 * @module
 * Decides the client's address. Without TRUST_PROXY the socket peer is the client and
 * `X-Forwarded-For` is ignored: any client can write that header. With TRUST_PROXY the chain
 * [X-Forwarded-For…, peer] is read right to left, since each proxy appends the address it saw:
 * with N hops, the address N steps left of the peer; with CIDRs, the first address that is not a
 * trusted proxy. Addresses are parsed by ipaddr.js and IPv4-mapped IPv6 is folded to IPv4, so
 * `::ffff:10.0.0.1` and `10.0.0.1` are one client.
 */
import ipaddr from "ipaddr.js";
import type { TrustProxy } from "../../config";

export type Address = ipaddr.IPv4 | ipaddr.IPv6;
type Range = [Address, number];

/** A TrustProxy from config, with its CIDRs parsed once. */
export type CompiledTrust =
  | { kind: "none" }
  | { kind: "hops"; hops: number }
  | { kind: "cidrs"; ranges: Range[] };

export function compileTrust(trust: TrustProxy): CompiledTrust {
  if (trust.kind !== "cidrs") return trust;
  return { kind: "cidrs", ranges: trust.cidrs.map(parseRange) };
}

export function parseRange(cidr: string): Range {
  const [address, bits] = ipaddr.parseCIDR(cidr);
  // Addresses are folded from IPv4-mapped IPv6 to IPv4 before matching, so the range must be too.
  if (address.kind() === "ipv6" && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    return [(address as ipaddr.IPv6).toIPv4Address(), bits - 96];
  }
  return [address, bits];
}

export function inRanges(address: Address, ranges: readonly Range[]): boolean {
  for (const range of ranges) {
    if (address.kind() === range[0].kind() && address.match(range)) return true;
  }
  return false;
}

/** Parses one address as proxies write it: bare, `v4:port`, `[v6]` or `[v6]:port`. */
export function parseAddress(raw: string): Address | null {
  let text = raw.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(text);
  if (bracketed) text = bracketed[1]!;
  else if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(text)) text = text.slice(0, text.lastIndexOf(":"));
  // Zone ids (fe80::1%eth0) are local to the proxy's host and never identify a client.
  text = text.replace(/%.*$/, "");
  if (!ipaddr.isValid(text)) return null;
  try {
    return ipaddr.process(text);
  } catch {
    return null;
  }
}

/** The normalised text form: IPv4 dotted, IPv6 RFC 5952 compact. */
export function formatAddress(address: Address): string {
  return address.kind() === "ipv6"
    ? (address as ipaddr.IPv6).toRFC5952String()
    : address.toString();
}

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
 * a single host is usually given a whole /64 and can rotate through it at will.
 */
export function clientKeyOf(address: Address | null): string {
  if (address === null) return UNKNOWN_CLIENT;
  if (address.kind() === "ipv4") return address.toString();
  const parts = (address as ipaddr.IPv6).parts.slice(0, 4);
  const prefix = ipaddr.IPv6.parse(`${parts.map((p) => p.toString(16)).join(":")}::`);
  return `${prefix.toRFC5952String()}/64`;
}

export function resolveClientAddress(
  input: ClientAddressInput,
  trust: CompiledTrust,
): Address | null {
  const peer = input.peer === null ? null : parseAddress(input.peer);
  if (peer === null) return null;
  if (trust.kind === "none" || !input.forwardedFor) return peer;

  const forwarded = input.forwardedFor.split(",");
  if (trust.kind === "hops") {
    // Each trusted hop accounts for one entry, from the right; past the list's start the leftmost
    // parseable entry is the best the chain can tell.
    let client = peer;
    for (let step = 1; step <= trust.hops && step <= forwarded.length; step++) {
      const next = parseAddress(forwarded[forwarded.length - step]!);
      if (next === null) break;
      client = next;
    }
    return client;
  }

  let client = peer;
  for (let index = forwarded.length - 1; index >= 0; index--) {
    if (!inRanges(client, trust.ranges)) break;
    const next = parseAddress(forwarded[index]!);
    // A malformed entry was written by the trusted proxy to its right; that proxy is what we know.
    if (next === null) break;
    client = next;
  }
  return client;
}
