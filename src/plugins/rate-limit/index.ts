/**
 * @module
 * The rate-limit stage. Runs before any parsing, on every path but the probes. A request with a
 * valid credential is keyed by its principal (the user or API key id: one office behind one NAT
 * does not share a budget, and a client cannot escape its budget by changing address); any other
 * request by client address (the IPv4 address or IPv6 /64). Each request is counted against its
 * route's policy (if the table names one) and the default policy, in that order; the first refusal
 * answers 429 with `Retry-After`, counts in `rate_limit_rejections_total`, goes to the audit log
 * and to the IP blocker as a violation of the address it came from.
 */
import { Elysia } from "elysia";
import { principalRef } from "../../modules/auth/principal";
import type { Identify } from "../auth/identify";
import { inRanges, parseRange } from "../client-ip/resolve";
import type { RequestState } from "../request-state";
import type { LimitEnforcer } from "./enforce";
import { type Policy, type PolicyTable, UNLIMITED_PATHS } from "./policies";

export interface RateLimitOptions {
  enforce: LimitEnforcer;
  policies: PolicyTable;
  allowCidrs: readonly string[];
  /** Finds the request's principal, if its credential is valid (shared with the auth stage). */
  identify?: Identify;
}

export function rateLimit({ enforce, policies, allowCidrs, identify }: RateLimitOptions) {
  const allowRanges = allowCidrs.map(parseRange);
  // One array per route policy, reused, so the header rendering cached on it is found again.
  const defaultOnly = [policies.defaultPolicy] as const;
  const layered = new Map<Policy, readonly Policy[]>();
  const policiesFor = (method: string, path: string): readonly Policy[] => {
    const routePolicy = policies.routePolicy(method, path);
    if (routePolicy === null) return defaultOnly;
    let list = layered.get(routePolicy);
    if (!list) {
      list = [routePolicy, policies.defaultPolicy];
      layered.set(routePolicy, list);
    }
    return list;
  };

  return new Elysia({ name: "palisade.rate-limit" })
    .onRequest(async function enforceRateLimit(context) {
      const { request, path, client, requestId, set } = context as unknown as RequestState & {
        set: { headers: Record<string, unknown> };
      };
      if (UNLIMITED_PATHS.has(path)) return;
      if (allowRanges.length > 0 && client.address && inRanges(client.address, allowRanges)) return;
      const found = identify ? await identify(request) : null;
      const key = found?.status === "ok" ? principalRef(found.principal) : `ip:${client.key}`;
      const headers = await enforce(policiesFor(request.method, path), key, {
        method: request.method,
        path,
        client,
        requestId,
      });
      if (headers) Object.assign(set.headers, headers);
    })
    .as("global");
}
