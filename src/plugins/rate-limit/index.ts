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
 * policy says its refusals are no violation (`webhooks`: signed providers that retry), or the request
 * is another site's or a sibling subdomain's page's navigation (cross-site/isCrossSiteNavigation). A request of
 * a principal that is locked out is refused before any policy counts it, and counts in
 * `rate_limit_rejections_total` under `policy="locked_out"` (its lockout was audited once, as
 * `auth.locked_out`, when it was made).
 */
import { Elysia } from "elysia";
import { AppError } from "../../errors";
import type { Identification, Identify } from "../auth/identify";
import { limitNameOf, type Principal, principalRef } from "../auth/principal";
import { inRanges, parseRange } from "../client-ip/resolve";
import { isCrossSiteNavigation, isSameSiteRequest } from "../cross-site";
import { sendsHeaderCredential } from "../csrf/cookies";
import type { RequestState } from "../request-state";
import type { ResolvedRouteClass } from "../route-class";
import type { LimitCharge, LimitEnforcer, LimitKeys } from "./enforce";
import { LOCKED_OUT_POLICY_LABEL, type RateLimitMetrics } from "./metrics";
import type { PolicyTable, RoutePolicy } from "./policies";

/** What a request is counted under, and whom a refusal of it names in the audit log. */
interface Counted {
  keys: LimitKeys;
  actor: string | null;
}

export interface RateLimitOptions {
  enforce: LimitEnforcer;
  policies: PolicyTable;
  allowCidrs: readonly string[];
  /** Finds the request's principal, if its credential is valid (shared with the auth stage). */
  identify?: Identify;
  /** When a principal's lockout ends, or null; repeated refusals of a principal lock it out. */
  lockedOutUntil?: (principal: string) => number | null;
  /** Counts the refusals of locked-out principals, which no policy's decision counts. */
  metrics?: RateLimitMetrics;
  /**
   * Whether a request whose only credential is the session cookie proves it comes from the app's
   * own page (a valid `X-CSRF-Token` for that session, not cross-site: csrf/createCsrfCheck). One
   * that does not is counted by address: a browser attaches the cookie to any same-site page's
   * request, so such requests may not spend the principal's budget nor lock it out (probe 32c F1).
   */
  cookieProven?: (request: Request) => boolean;
  now?: () => number;
}

export function rateLimit(options: RateLimitOptions) {
  const { enforce, policies, allowCidrs, identify, lockedOutUntil, metrics, cookieProven } =
    options;
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

  /** The request's principal, if it carries a valid credential; a lockout refuses it here. */
  const principalOf = (found: Identification): Principal | null => {
    if (found.status !== "ok") return null;
    const principal = found.principal;
    const until = lockedOutUntil?.(limitNameOf(principal)) ?? null;
    if (until !== null) {
      metrics?.rejections.labels(LOCKED_OUT_POLICY_LABEL).inc();
      const seconds = String(Math.max(1, Math.ceil((until - now()) / 1000)));
      throw new AppError(
        "RATE_LIMITED",
        `Too many refused requests from this credential; retry in ${seconds} s.`,
        undefined,
        { "retry-after": seconds },
      );
    }
    return principal;
  };

  /** For a request counted by no policy: refused (thrown) only if its principal is locked out. */
  const refuseIfLockedOut = (request: Request): Promise<void> | undefined => {
    const found = identify!.now(request);
    if (found !== undefined) {
      principalOf(found);
      return undefined;
    }
    return identify!(request).then((settled) => {
      principalOf(settled);
    });
  };

  /** For a request counted by address alone: refused (thrown) only if its principal is locked out. */
  const addressAfterLockout = (found: Identification): null => {
    principalOf(found);
    return null;
  };

  const keysOf = (
    applied: readonly RoutePolicy[],
    address: string,
    principal: Principal | null,
  ) => {
    if (principal === null) return address;
    const name = limitNameOf(principal);
    return applied.map((policy) => (policy.keyedBy === "principal" ? name : address));
  };

  /** The keys, and the principal a refusal's audit row names (a bootstrap key by its row's id). */
  const countedKeys = (
    applied: readonly RoutePolicy[],
    address: string,
    principal: Principal | null,
  ): Counted => ({
    keys: keysOf(applied, address, principal),
    actor: principal === null ? null : principalRef(principal),
  });

  /**
   * The principal the request is counted against: its own, unless its credential is the session
   * cookie (identify marks it ambient) and it does not prove it comes from the app's page. A
   * lockout is asked of the credential first either way (principalOf), so a locked-out session is
   * refused without a token.
   */
  const countedAs = (request: Request, found: Identification): Principal | null => {
    const principal = principalOf(found);
    const unproven = found.status === "ok" && found.ambient && cookieProven?.(request) === false;
    return unproven ? null : principal;
  };

  /**
   * Counts a request the store must decide, by its keys or, when its credential must still be
   * verified, by the keys that verdict gives. Promise callbacks rather than `async` functions
   * awaiting one another: each such layer costs a request more than its microtask over HTTP
   * (README, Performance).
   */
  const limit = (
    state: RequestState & { set: { headers: Record<string, unknown> } },
    applied: readonly RoutePolicy[],
    counted: Counted | Promise<Counted>,
  ): Promise<void> => {
    const { request, path, client, requestId, set } = state;
    const context = {
      method: request.method,
      path,
      client,
      requestId,
      actor: null as string | null,
      // Kept for a handler that gives it back (a sign-in the password queue refused).
      charged: (charge: LimitCharge) => {
        state.limitCharge = charge;
      },
      // Only where a link may lead (what the cross-site stage lets a navigation through to): the
      // same headers with an allowed Origin passed that stage on every route, and a script
      // sending them escaped every block and lockout (probe 58c F1). And only without a
      // credential, which no browser puts on a navigation from another site (the session cookie
      // is SameSite=Strict): with one, a script escaped its principal's lockout (58d F1).
      // A sibling subdomain is the same site, so the browser does send the session cookie on its
      // page's navigation: there the cookie is the page's doing, and only a header is the sender's.
      sentForAnotherSite:
        state.routeClass.navigable === true &&
        isCrossSiteNavigation(request) &&
        !(isSameSiteRequest(request)
          ? sendsHeaderCredential(request.headers)
          : identify?.carriesCredential(request) === true),
    };
    const decide = (known: Counted) => {
      context.actor = known.actor;
      return enforce(applied, known.keys, context);
    };
    const decided = counted instanceof Promise ? counted.then(decide) : decide(counted);
    return decided.then((headers) => {
      if (headers) Object.assign(set.headers, headers);
    });
  };

  return new Elysia({ name: "palisade.rate-limit" })
    .onRequest(function enforceRateLimit(context) {
      const state = context as unknown as RequestState & {
        set: { headers: Record<string, unknown> };
      };
      const { request, client, routeClass } = state;
      if (routeClass.probe) return;
      const applied = policiesFor(routeClass);
      // A request that may be counted against a principal needs its credential's verdict (known
      // at once unless a token must still be verified); any other is counted by address. With
      // its keys known, a lease of them admits it without waiting.
      // A credential's lockout is asked on every route it is sent to, one counted by address
      // alone too (`/metrics`: a locked-out key with the metrics scope read it on, probe 69c F1).
      const carries = identify?.carriesCredential(request) === true;
      const countsPrincipal = carries && applied.some((policy) => policy.keyedBy === "principal");
      if (allowRanges.length > 0 && client.address && inRanges(client.address, allowRanges)) {
        // Never limited, but a lockout is the credential's, not the address's: a locked-out key
        // is refused from inside the allow list too (probe 24 F1).
        return carries ? refuseIfLockedOut(request) : undefined;
      }
      const address = `ip:${client.key}`;
      /** Counted against its principal where a policy counts by one, else by address alone. */
      const counted = (known: Identification) =>
        countsPrincipal ? countedAs(request, known) : addressAfterLockout(known);
      const found = carries ? identify!.now(request) : undefined;
      if (carries && found === undefined) {
        const verified = identify!(request);
        return limit(
          state,
          applied,
          verified.then((settled) => countedKeys(applied, address, counted(settled))),
        );
      }
      const principal = found === undefined ? null : counted(found);
      const keys = keysOf(applied, address, principal);
      const headers = enforce.admitNow(applied, keys);
      if (headers !== undefined) {
        Object.assign(state.set.headers, headers);
        return;
      }
      return limit(state, applied, {
        keys,
        actor: principal === null ? null : principalRef(principal),
      });
    })
    .as("global");
}
