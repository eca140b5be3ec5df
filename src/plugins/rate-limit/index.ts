/**
 * @module
 * The rate-limit stage. Runs before any parsing, on every route class but the probes. Each request
 * is counted against its route class's policy (if it names one) and the default policy, in that
 * order (a standalone policy, `webhooks`, is counted alone), each keyed as the policy says (policies.ts): by client address (the IPv4 address or IPv6
 * /64), or by principal (the user or API key id, verified once per request and shared with the
 * auth stage; a request without a valid credential counts by address). The first refusal answers
 * 429 with `Retry-After`, counts in `rate_limit_rejections_total`, goes to the audit log, and is a
 * violation of whoever was refused: a principal (repeated refusals lock it out for a while) or an
 * address (repeated refusals block it), never the address of a principal's request — unless the
 * policy says its refusals are no violation (`webhooks`: signed providers that retry).
 */
import { Elysia } from "elysia";
import { AppError } from "../../errors";
import type { Identify } from "../auth/identify";
import { principalRef } from "../auth/principal";
import { inRanges, parseRange } from "../client-ip/resolve";
import type { RequestState } from "../request-state";
import type { ResolvedRouteClass } from "../route-class";
import type { LimitEnforcer } from "./enforce";
import type { PolicyTable, RoutePolicy } from "./policies";

export interface RateLimitOptions {
  enforce: LimitEnforcer;
  policies: PolicyTable;
  allowCidrs: readonly string[];
  /** Finds the request's principal, if its credential is valid (shared with the auth stage). */
  identify?: Identify;
  /** When a principal's lockout ends, or null; repeated refusals of a principal lock it out. */
  lockedOutUntil?: (principal: string) => number | null;
  now?: () => number;
}

export function rateLimit(options: RateLimitOptions) {
  const { enforce, policies, allowCidrs, identify, lockedOutUntil } = options;
  const now = options.now ?? Date.now;
  const allowRanges = allowCidrs.map(parseRange);
  // One array per route policy, reused, so the header rendering cached on it is found again.
  const defaultOnly = [policies.defaultPolicy] as const;
  const layered = new Map<string, readonly RoutePolicy[]>();
  const policiesFor = (routeClass: ResolvedRouteClass): readonly RoutePolicy[] => {
    if (routeClass.policy === null || routeClass.policy === "default") return defaultOnly;
    let list = layered.get(routeClass.policy);
    if (!list) {
      const own = policies.get(routeClass.policy);
      list = own.standalone ? [own] : [own, policies.defaultPolicy];
      layered.set(routeClass.policy, list);
    }
    return list;
  };

  return new Elysia({ name: "palisade.rate-limit" })
    .onRequest(async function enforceRateLimit(context) {
      const { request, path, client, requestId, set, routeClass } =
        context as unknown as RequestState & {
          set: { headers: Record<string, unknown> };
        };
      if (routeClass.probe) return;
      if (allowRanges.length > 0 && client.address && inRanges(client.address, allowRanges)) return;
      const applied = policiesFor(routeClass);
      const address = `ip:${client.key}`;
      let principal: string | null = null;
      if (identify && applied.some((policy) => policy.keyedBy === "principal")) {
        const found = await identify(request);
        if (found.status === "ok") principal = principalRef(found.principal);
      }
      if (principal !== null && lockedOutUntil) {
        const until = lockedOutUntil(principal);
        if (until !== null) {
          const seconds = String(Math.max(1, Math.ceil((until - now()) / 1000)));
          throw new AppError(
            "RATE_LIMITED",
            `Too many refused requests from this credential; retry in ${seconds} s.`,
            undefined,
            { "retry-after": seconds },
          );
        }
      }
      const keys =
        principal === null
          ? address
          : applied.map((policy) => (policy.keyedBy === "principal" ? principal : address));
      const headers = await enforce(applied, keys, {
        method: request.method,
        path,
        client,
        requestId,
      });
      if (headers) Object.assign(set.headers, headers);
    })
    .as("global");
}
