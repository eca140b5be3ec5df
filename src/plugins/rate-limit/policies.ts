/**
 * @module
 * The rate-limit policies. A policy says how many requests a key may make per minute (with a
 * 10-second burst window layered on it), whether the store failing lets requests through, and —
 * as a property of the policy, not of what a request carries — what it counts per:
 *
 * - `address`: the client address (IPv4, or the IPv6 /64), whatever credential is attached. Sign-up,
 *   sign-in and refresh are limited per address: a bearer token must not buy a fresh budget.
 * - `principal`: the signed-in user or API key, so one office behind one NAT does not share a
 *   budget; a request without a valid credential counts per address.
 *
 * Which routes a policy covers is said by the route classes (plugins/route-class); a limited
 * request is also counted against the default policy, except on a standalone policy.
 *
 * `webhooks` is standalone: its senders (Stripe, Meta) are signature-verified providers that burst
 * (a bulk refund is hundreds of events at once) and retry what is refused. RATE_LIMIT_WEBHOOKS is
 * then the whole limit, per minute with no tighter burst window, not capped by the default policy
 * nor RATE_LIMIT_BURST, and its refusals are not violations: a provider's address is never
 * blocked for delivering (a forged flood is refused by its signatures and this limit alone).
 *
 * `metrics` is standalone for the same reason: Prometheus scrapes from one address, which other
 * requests from its host (an operator's curl, an agent, a NAT) would otherwise spend and block.
 * RATE_LIMIT_METRICS is the scrapes' whole limit, and refusing one never blocks the address; a
 * wrong token is still a failed credential, counted towards a block as any other.
 */
import type { Config } from "../../config";

export const BURST_WINDOW_MS = 10_000;
export const MINUTE_MS = 60_000;

export type KeyedBy = "address" | "principal";

export interface Policy {
  id: string;
  limit: number;
  windowMs: number;
  burstLimit: number;
  /**
   * When the store cannot answer: false lets the request through (a public route should not go
   * down with its limiter), true refuses it (a login must not become brute-forceable).
   */
  failClosed: boolean;
  /** Counted alone: not also against the default policy, and its own limit is its burst. */
  standalone?: boolean;
  /** Whether a refusal is a violation that may block the address or lock out the principal. */
  refusalIsViolation?: boolean;
}

/** A policy a route class names: the limiter's policy, and what it counts per. */
export interface RoutePolicy extends Policy {
  keyedBy: KeyedBy;
}

interface PolicySpec {
  keyedBy: KeyedBy;
  failClosed: boolean;
  standalone?: boolean;
  refusalIsViolation?: boolean;
}

/** Every policy a route class may name, with its keying and failure mode. */
export const POLICY_SPECS = {
  default: { keyedBy: "principal", failClosed: false },
  login: { keyedBy: "address", failClosed: true },
  register: { keyedBy: "address", failClosed: true },
  refresh: { keyedBy: "address", failClosed: true },
  privacy: { keyedBy: "principal", failClosed: true },
  // Standalone and no violation, like webhooks: a scraper shares its address with whatever else
  // runs on its host, and a blocked Prometheus is every alert blind (probe 35a F1).
  metrics: { keyedBy: "address", failClosed: false, standalone: true, refusalIsViolation: false },
  // Chat and payments spend money upstream: a broken store must not lift their limits.
  chat: { keyedBy: "principal", failClosed: true },
  payments: { keyedBy: "principal", failClosed: true },
  // Webhooks are signature-verified and their senders retry; the limit only bounds a flood.
  webhooks: { keyedBy: "address", failClosed: false, standalone: true, refusalIsViolation: false },
} as const satisfies Record<string, PolicySpec>;

export type PolicyId = keyof typeof POLICY_SPECS;
export const POLICY_IDS = Object.keys(POLICY_SPECS) as PolicyId[];

export interface PolicyTable {
  defaultPolicy: RoutePolicy;
  get(id: PolicyId): RoutePolicy;
}

export function buildPolicyTable(rateLimit: Config["rateLimit"]): PolicyTable {
  const built = new Map<PolicyId, RoutePolicy>();
  for (const id of POLICY_IDS) {
    const limit = rateLimit.policies[id];
    const spec: PolicySpec = POLICY_SPECS[id];
    built.set(id, {
      id,
      limit,
      windowMs: MINUTE_MS,
      burstLimit: spec.standalone ? limit : Math.min(rateLimit.burst, limit),
      ...spec,
    });
  }
  return {
    defaultPolicy: built.get("default")!,
    get: (id) => built.get(id)!,
  };
}
