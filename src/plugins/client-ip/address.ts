/**
 * @module
 * The one parser for IP addresses and CIDR ranges, used everywhere an address is read: the socket
 * peer, `X-Forwarded-For` entries, `TRUST_PROXY`, `RATE_LIMIT_ALLOW_CIDRS`, and the admin blocks
 * API and CLI.
 *
 * Only two spellings are accepted: canonical dotted-decimal IPv4 (four decimal octets 0–255, no
 * leading zeros) and IPv6 as RFC 4291 writes it (an embedded IPv4 tail must be canonical too). No
 * zone ids, no whitespace, no ports. ipaddr.js alone accepts what inet_aton does (`010.1.1.1` is
 * octal 8.1.1.1, `0x7f.1` and `2130706433` are 127.0.0.1, `127.1` is short for 127.0.0.1): each is
 * a different address to a person reading it, so a block or a trusted range written that way
 * would not cover what its author meant. The grammar is checked here by hand (RFC 3986's
 * `IPv6address` and a strict `dec-octet`); ipaddr.js then turns the checked text into a value.
 * IPv4-mapped IPv6 is folded to IPv4, so `::ffff:10.0.0.1` and `10.0.0.1` are one client.
 */
import ipaddr from "ipaddr.js";

export type Address = ipaddr.IPv4 | ipaddr.IPv6;
/** An address and the number of leading bits that must match. */
export type Range = [Address, number];

const OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const V4 = `${OCTET}(?:\\.${OCTET}){3}`;
const H = "[0-9A-Fa-f]{1,4}";
const LS32 = `(?:${H}:${H}|${V4})`;
// RFC 3986 section 3.2.2, IPv6address, alternative by alternative.
const V6 = [
  `(?:${H}:){6}${LS32}`,
  `::(?:${H}:){5}${LS32}`,
  `(?:${H})?::(?:${H}:){4}${LS32}`,
  `(?:(?:${H}:){0,1}${H})?::(?:${H}:){3}${LS32}`,
  `(?:(?:${H}:){0,2}${H})?::(?:${H}:){2}${LS32}`,
  `(?:(?:${H}:){0,3}${H})?::${H}:${LS32}`,
  `(?:(?:${H}:){0,4}${H})?::${LS32}`,
  `(?:(?:${H}:){0,5}${H})?::${H}`,
  `(?:(?:${H}:){0,6}${H})?::`,
].join("|");

const IPV4_TEXT = new RegExp(`^${V4}$`);
const IPV6_TEXT = new RegExp(`^(?:${V6})$`);
const PREFIX_LENGTH = /^(?:0|[1-9][0-9]{0,2})$/;

/**
 * The checked dotted-decimal text as an address. The grammar is already strict here, so the octets
 * are plain decimals: ipaddr.js's own parser, which tries every inet_aton form, took twice as long
 * (1.0 against 0.7 µs), paid for each new client of a flood of addresses.
 */
function ipv4Of(text: string): ipaddr.IPv4 {
  const octets = text.split(".");
  return new ipaddr.IPv4([+octets[0]!, +octets[1]!, +octets[2]!, +octets[3]!]);
}

/**
 * The checked IPv6 text as an address. ipaddr.js reads an embedded IPv4 tail after `::` alone
 * (`::192.0.2.77`, RFC 4291's IPv4-compatible form, `::c000:24d`) as the IPv4-mapped
 * `::ffff:192.0.2.77`, which is then folded to the IPv4 host: so the tail goes to it in hex, as
 * the two groups it stands for, and the address is what the text says (probe 15a F1).
 */
function ipv6Of(text: string): ipaddr.IPv6 {
  const colon = text.lastIndexOf(":");
  const tail = text.slice(colon + 1);
  if (!tail.includes(".")) return ipaddr.IPv6.parse(text);
  const [a, b, c, d] = tail.split(".").map(Number) as [number, number, number, number];
  const groups = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  return ipaddr.IPv6.parse(`${text.slice(0, colon + 1)}${groups}`);
}

/** Parses a canonical IPv4 or a valid IPv6 address; anything else is null. */
export function parseIp(text: string): Address | null {
  if (text.length > 45) return null;
  if (IPV4_TEXT.test(text)) return ipv4Of(text);
  if (!IPV6_TEXT.test(text)) return null;
  const address = ipv6Of(text);
  return address.isIPv4MappedAddress() ? address.toIPv4Address() : address;
}

/**
 * Parses `address/bits` (bits in decimal without leading zeros, at most 32 or 128); null when
 * either part is not as parseIp and the address family allow. An IPv4-mapped range of /96 or
 * more becomes the IPv4 range it covers, since addresses are folded the same way.
 */
export function parseCidr(text: string): Range | null {
  const slash = text.indexOf("/");
  if (slash === -1) return null;
  const bitsText = text.slice(slash + 1);
  if (!PREFIX_LENGTH.test(bitsText)) return null;
  const bits = Number(bitsText);
  const addressText = text.slice(0, slash);
  if (IPV4_TEXT.test(addressText)) {
    return bits <= 32 ? [ipv4Of(addressText), bits] : null;
  }
  if (!IPV6_TEXT.test(addressText) || bits > 128) return null;
  const address = ipv6Of(addressText);
  if (address.isIPv4MappedAddress() && bits >= 96) return [address.toIPv4Address(), bits - 96];
  return [address, bits];
}

/** The normalised text form: IPv4 dotted, IPv6 RFC 5952 compact. */
export function formatAddress(address: Address): string {
  return address.kind() === "ipv6"
    ? (address as ipaddr.IPv6).toRFC5952String()
    : address.toString();
}

/** A range's normalised text form, `address/bits`. */
export function formatRange([address, bits]: Range): string {
  return `${formatAddress(address)}/${bits}`;
}

/**
 * The family whose every address the ranges cover together, or null. Trusting such a list as
 * proxies is trusting everyone (any client could name its own address); `0.0.0.0/0` is the
 * obvious spelling, `0.0.0.0/1,128.0.0.0/1` or `::/0` the others.
 */
export function coversEveryAddress(ranges: readonly Range[]): "IPv4" | "IPv6" | null {
  const v4 = 1n << 32n;
  if (coveredWithin(spansOf(ranges, "ipv4"), 0n, v4) === v4) return "IPv4";
  // IPv4-mapped addresses are folded to IPv4 before any range is matched, so no IPv6 client comes
  // from ::ffff:0:0/96: a list that covers the rest covers every IPv6 client.
  const v6 = spansOf(ranges, "ipv6");
  const mapped = 0xffffn << 32n;
  const covered = coveredWithin(v6, 0n, 1n << 128n) - coveredWithin(v6, mapped, mapped + v4);
  return covered + v4 === 1n << 128n ? "IPv6" : null;
}

/** An address as the number it is (32 or 128 bits). */
function numberOf(address: Address): bigint {
  let value = 0n;
  for (const byte of address.toByteArray()) value = (value << 8n) | BigInt(byte);
  return value;
}

/** The addresses of `family` the ranges cover, as merged `[start, end)` spans of the family's space. */
function spansOf(ranges: readonly Range[], family: "ipv4" | "ipv6"): [bigint, bigint][] {
  const width = family === "ipv4" ? 32n : 128n;
  const spans = ranges
    .filter(([address]) => address.kind() === family)
    .map(([address, bits]) => {
      let start = numberOf(address);
      const size = 1n << (width - BigInt(bits));
      start -= start % size;
      return [start, start + size] as [bigint, bigint];
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged: [bigint, bigint][] = [];
  for (const span of spans) {
    const last = merged.at(-1);
    if (!last || span[0] > last[1]) merged.push([span[0], span[1]]);
    else if (span[1] > last[1]) last[1] = span[1];
  }
  return merged;
}

/** How many addresses of `[from, to)` the spans cover. */
function coveredWithin(spans: readonly [bigint, bigint][], from: bigint, to: bigint): bigint {
  let covered = 0n;
  for (const [start, end] of spans) {
    const low = start > from ? start : from;
    const high = end < to ? end : to;
    if (high > low) covered += high - low;
  }
  return covered;
}

/** NAT64's well-known prefix, `64:ff9b::/96` (RFC 6052): IPv4 clients translated to IPv6. */
const NAT64_PREFIX = (0x64n << 112n) | (0xff9bn << 96n);

/** The IPv4 ranges IPv6 ranges in (or around) `64:ff9b::/96` stand for: the clients they hold. */
function nat64AsIpv4(ranges: readonly Range[]): Range[] {
  const held: Range[] = [];
  for (const [address, bits] of ranges) {
    if (address.kind() !== "ipv6") continue;
    const start = numberOf(address);
    const prefixBits = BigInt(Math.min(bits, 96));
    const mask = ((1n << prefixBits) - 1n) << (128n - prefixBits);
    if ((start & mask) !== (NAT64_PREFIX & mask)) continue;
    if (bits <= 96) held.push([ipaddr.IPv4.parse("0.0.0.0"), 0]);
    else held.push([new ipaddr.IPv4(address.toByteArray().slice(12)), bits - 96]);
  }
  return held;
}

/** The shortest IPv6 prefix inside the global unicast space an allow or proxy list may name. */
const SHORTEST_GLOBAL_IPV6_PREFIX = 20;

/**
 * The family of which the ranges cover half or more of the addresses clients come from, or null:
 * half of IPv4 (counting the IPv4 clients a NAT64 range, `64:ff9b::/96`, holds), or IPv6's global
 * unicast space (2000::/3, RFC 4291) in ranges no list of proxies or of exempt addresses means:
 * half of it, or any range shorter than /20 in it, the size of a registry's allocation (the
 * registries' /12s together are nearly every IPv6 client). `0.0.0.0/1,128.0.0.0/2,…` (all but a
 * sliver) or `2000::/3` turn the check off as surely as `0.0.0.0/0` (re-probes 15c F7, 15d F2).
 */
export function coversMostAddresses(ranges: readonly Range[]): "IPv4" | "IPv6" | null {
  const unicast = 0x2n << 124n;
  const spans = spansOf(ranges, "ipv6");
  if (coveredWithin(spans, unicast, unicast + (1n << 125n)) >= 1n << 124n) return "IPv6";
  const wide = 1n << BigInt(128 - SHORTEST_GLOBAL_IPV6_PREFIX);
  const inUnicast = ([start, end]: [bigint, bigint]) =>
    end > unicast && start < unicast + (1n << 125n);
  if (spans.some((span) => inUnicast(span) && span[1] - span[0] > wide)) return "IPv6";
  const ipv4 = [...ranges, ...nat64AsIpv4(ranges)];
  if (coveredWithin(spansOf(ipv4, "ipv4"), 0n, 1n << 32n) >= 1n << 31n) return "IPv4";
  return null;
}
