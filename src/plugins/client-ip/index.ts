/**
 * @module
 * Adds `clientIp` (the normalised address) and `clientKey` (what limits and blocks are keyed by:
 * the IPv4 address or the IPv6 /64) to every request's context, before any defence that uses them.
 * Resolutions are memoised per (peer, X-Forwarded-For) pair: most requests repeat one.
 */
import { Elysia } from "elysia";
import type { TrustProxy } from "../../config";
import { AppError } from "../../errors";
import type { Range } from "./address";
import {
  type Address,
  clientKeyOf,
  compileTrust,
  formatAddress,
  inRanges,
  resolveClientAddress,
  siteKeyOf,
  UNKNOWN_CLIENT,
} from "./resolve";

export interface ClientIpOptions {
  trustProxy: TrustProxy;
  /**
   * Finds the socket peer's address; tests that call `app.handle` (which has no socket) pass their
   * own, and the metrics listener names the peer of the requests it hands over. `undefined`: ask
   * `listener`.
   */
  peerAddress?: (request: Request) => string | null | undefined;
  /**
   * The server whose sockets the requests arrive on (Bun's `server.requestIP`), asked when
   * `peerAddress` gives `undefined`; without either the peer is unknown. Passed in rather than read
   * from Elysia's context: a hook that reads `server` there makes every request of every route
   * define it on its context.
   */
  listener?: () => { requestIP(request: Request): { address: string } | null } | null | undefined;
  /** Told of a request whose chain is shorter than TRUST_PROXY's hops (see `shortChain`). */
  onShortChain?: (chain: ShortChain) => void;
}

/**
 * A request that came with fewer `X-Forwarded-For` entries than TRUST_PROXY trusts hops. Every
 * proxy appends one, so a request that passed through as many proxies as configured carries at
 * least that many: fewer says there are fewer proxies than hops (or the request skipped some), and
 * then a client that sends its own `X-Forwarded-For` chooses the address it is limited, blocked and
 * audited under (probe 30d F3). A request with no `X-Forwarded-For` at all reached the service
 * directly (a health check on the host) and says nothing.
 */
export interface ShortChain {
  hops: number;
  entries: number;
}

export interface ResolvedClient {
  ip: string;
  key: string;
  address: Address | null;
  /**
   * The keys of the trusted proxies the request came through (the socket peer first) that are not
   * the client's own: the admin blocks API will not block one of them (probes 32d F2, 33b F2).
   */
  proxyKeys?: readonly string[];
  /**
   * The client's key covers a proxy TRUST_PROXY trusts: a request the proxy sent or passed on
   * without a usable `X-Forwarded-For` (with a hop count, any request with none, whose peer is
   * taken for the proxy), or one from another address in an IPv6 proxy's /64, which shares its
   * key. It is limited like any client but never blocked automatically: a block is made on the
   * key, and would refuse the proxy's own requests (probes 75c F2, 75e F1).
   */
  isTrustedProxy?: boolean;
  /**
   * The IPv6 /48 the client's /64 key lies in (siteKeyOf), or null: an automatic block on it
   * refuses every /64 inside (ip-block).
   */
  siteKey?: string | null;
}

const MEMO_LIMIT = 10_000;
const NO_PROXIES: readonly string[] = Object.freeze([]);
/**
 * Longer X-Forwarded-For values are resolved every time, never remembered: the header is client
 * text (a proxy appends to what the client sent) of up to ~16 KB, and 10,000 remembered 16 KB
 * keys would pin 160 MB. A real chain of a few proxies is well under this.
 */
export const MEMO_MAX_FORWARDED_LENGTH = 256;

export interface ClientResolver {
  resolve(peer: string | null, forwardedFor: string | null): ResolvedClient;
  /** How many resolutions are remembered now (at most MEMO_LIMIT). */
  readonly remembered: number;
}

/**
 * Resolves a request's client from its socket peer and X-Forwarded-For, remembering the answer per
 * (peer, header) pair: most requests repeat one.
 */
export function createClientResolver(
  trustProxy: TrustProxy,
  onShortChain: (chain: ShortChain) => void = () => {},
): ClientResolver {
  const trust = compileTrust(trustProxy);
  const resolveNow = (
    peer: string | null,
    forwardedFor: string | null,
  ): ResolvedClient & { shortChain: ShortChain | null } => {
    let shortChain: ShortChain | null = null;
    if (trust.kind === "hops" && forwardedFor) {
      const entries = forwardedFor.split(",").length;
      if (entries < trust.hops) shortChain = { hops: trust.hops, entries };
    }
    const proxies: Address[] = [];
    const address = resolveClientAddress({ peer, forwardedFor }, trust, proxies);
    const key = clientKeyOf(address);
    return {
      ip: address === null ? UNKNOWN_CLIENT : formatAddress(address),
      key,
      address,
      siteKey: siteKeyOf(address),
      isTrustedProxy:
        address !== null &&
        (trust.kind === "cidrs"
          ? keyCoversRanges(address, trust.ranges)
          : trust.kind === "hops" && proxies.length === 0),
      proxyKeys:
        proxies.length === 0
          ? NO_PROXIES
          : proxies.map((proxy) => clientKeyOf(proxy)).filter((proxyKey) => proxyKey !== key),
      shortChain,
    };
  };
  /** Each request whose chain is short is told, remembered or not: the logger counts repeats. */
  const told = (resolved: ResolvedClient & { shortChain: ShortChain | null }) => {
    if (resolved.shortChain !== null) onShortChain(resolved.shortChain);
    return resolved;
  };
  const memo = new Map<string, ResolvedClient & { shortChain: ShortChain | null }>();
  return {
    resolve(peer, forwardedFor) {
      const forwarded = trust.kind === "none" ? null : forwardedFor;
      if (forwarded !== null && forwarded.length > MEMO_MAX_FORWARDED_LENGTH) {
        return told(resolveNow(peer, forwarded));
      }
      const memoKey = forwarded === null ? (peer ?? "") : `${peer}|${forwarded}`;
      let resolved = memo.get(memoKey);
      if (resolved === undefined) {
        resolved = resolveNow(peer, forwardedFor);
        // A flood of distinct addresses must not grow memory without bound.
        if (memo.size >= MEMO_LIMIT) memo.clear();
        memo.set(memoKey, resolved);
      }
      return told(resolved);
    },
    get remembered() {
      return memo.size;
    },
  };
}

export function clientIp({ trustProxy, peerAddress, listener, onShortChain }: ClientIpOptions) {
  const { resolve } = createClientResolver(trustProxy, onShortChain);

  return new Elysia({ name: "palisade.client-ip", seed: trustProxy })
    .decorate("clientIp", "")
    .decorate("clientKey", "")
    .decorate("client", null as ResolvedClient | null)
    .onRequest(function resolveClientAddressOfRequest(context) {
      const given = peerAddress?.(context.request);
      let peer: string | null = given ?? null;
      if (given === undefined) {
        const server = listener?.();
        peer = server?.requestIP(context.request)?.address ?? null;
        // A socket has a peer until it closes: none means the client has gone (reset its
        // connection right after sending). Served as `unknown`, such a request passed the address
        // block, and its refusals blocked no one and were each audited (probe 87b F1). Nothing can
        // reach the client now: 499, logged and counted, and no stage after this one runs.
        if (server && peer === null) {
          context.clientIp = UNKNOWN_CLIENT;
          context.clientKey = UNKNOWN_CLIENT;
          throw new AppError(
            "CLIENT_CLOSED",
            "The connection closed before the request could be served.",
          );
        }
      }
      const resolved = resolve(peer, context.request.headers.get("x-forwarded-for"));
      context.client = resolved;
      context.clientIp = resolved.ip;
      context.clientKey = resolved.key;
    })
    .as("global");
}

/**
 * Whether the client's key (an IPv4 address, an IPv6 address's /64) shares an address with one of
 * the ranges: a trusted proxy at `2001:db8::1` is inside the key `2001:db8::/64` of a neighbour.
 */
function keyCoversRanges(address: Address, ranges: readonly Range[]): boolean {
  if (inRanges(address, ranges)) return true;
  if (address.kind() !== "ipv6") return false;
  const key = clientKeyOf(address);
  if (key.endsWith("/128")) return false;
  return ranges.some(([network, bits]) => {
    if (network.kind() !== "ipv6" || bits < 64) return false;
    // One address: its own key, which a translated IPv4 address's is not (`64:ff9b::a00:1/128`).
    if (bits === 128) return clientKeyOf(network) === key;
    return network.match(address, 64);
  });
}
