/**
 * @module
 * Fetch Metadata resource isolation: a request a browser made for a page of another site, which
 * this API has no use for, is refused (403 `CROSS_SITE_REFUSED`) before the rate limit counts it.
 *
 * Any page can make its visitors' browsers send requests here without CORS: an `<img>`, a
 * `fetch(url, {mode: "no-cors"})`, a form, an iframe. They carry no credential (the session cookie
 * is `SameSite=Strict`), so they were counted against the visitor's address, and their refusals were
 * violations: thirty image tags on a forum post blocked every visitor's address, and everyone
 * behind it (an office's NAT, a carrier's), for 15 minutes, then an hour, then a day (probe 46a F3).
 *
 * Browsers say where a request came from (`Sec-Fetch-Site`, what kind it is in `Sec-Fetch-Mode` and
 * `Sec-Fetch-Dest`). A request marked `cross-site` or `same-site` (a sibling subdomain's page: a
 * forum, a blog) is let through only when it comes from an origin in CORS_ALLOWED_ORIGINS (its
 * `Origin` header: the browser front-end's calls and their preflights), or is a top-level
 * navigation by GET or HEAD to a route a link may open (`navigable`: the documentation). A page
 * could otherwise open the API's URLs one after another in a window it opened, each a navigation
 * counted against the visitor's address (probe 49a F2), and a sibling's page could do with
 * `fetch()`, a form or a window what another site's could not (probe 75e F4). What a sibling's
 * page loads into itself or fetches without CORS (an image, a script, a frame) is refused even
 * from an allowed origin: no route serves one (probe 75c F4). Every other request is unchanged:
 * clients that are not browsers send no `Sec-Fetch-*` header (Stripe's and Meta's webhooks,
 * Prometheus, SDKs, curl), and same-origin requests are not refused here. Not audited: anyone can
 * send as many as they like, and each is counted by status in `http_requests_total`.
 */
import { Elysia } from "elysia";
import { AppError } from "../../errors";
import type { RequestState } from "../request-state";

/**
 * Whether a browser said the request is cross-site. Browsers send one lower-case value; a value in
 * another case, or several joined into a list (two headers), counts as cross-site when any of them
 * says so (probe 15a F5).
 */
export function isCrossSite(value: string | null): boolean {
  return value !== null && CROSS_SITE_ITEM.test(value);
}

/**
 * An item of a list, read in one pass without splitting: a value of 15,000 commas was split into
 * as many strings by each of four checks, 4 ms a request (probe 76b F2).
 */
const CROSS_SITE_ITEM = /(?:^|,)[ \t]*cross-site[ \t]*(?=,|$)/i;
const SAME_SITE_ITEM = /(?:^|,)[ \t]*same-site[ \t]*(?=,|$)/i;

/** Whether a browser said the request is another origin's of the same site (a sibling subdomain). */
function isSameSite(value: string | null): boolean {
  return value !== null && SAME_SITE_ITEM.test(value);
}

/**
 * Whether a browser sent the request for a page of a sibling subdomain (same site) and said
 * nothing of another site: a list naming both is the stronger's (probe 76b F3).
 */
export function isSameSiteRequest(request: Request): boolean {
  const site = request.headers.get("sec-fetch-site");
  return isSameSite(site) && !isCrossSite(site);
}

/**
 * What a page loads into itself (an image, a script, a style sheet, a frame, …) or fetches
 * without CORS: no route of this API serves one, and the page cannot read the answer.
 */
function isPageLoad(request: Request): boolean {
  if (request.headers.get("sec-fetch-mode") === "no-cors") return true;
  const destination = request.headers.get("sec-fetch-dest");
  return destination !== null && destination !== "empty" && destination !== "document";
}

/** A page the user opened (a link followed): not a frame or an embedding, and nothing sent. */
function isTopLevelNavigation(request: Request): boolean {
  if (request.method !== "GET" && request.method !== "HEAD") return false;
  if (request.headers.get("sec-fetch-mode") !== "navigate") return false;
  const destination = request.headers.get("sec-fetch-dest");
  return destination === null || destination === "document";
}

/**
 * A top-level navigation from another site's page or a sibling's (the only such request but the
 * allowed origins' that this stage lets through): a page can make its visitors open as many as it
 * likes (a window it opened, sent from URL to URL), so the rate limit counts it but its refusals
 * are no violation of the visitor's address (probe 58b F1: thirty navigations to `/openapi.json`
 * blocked the visitor, and everyone behind their address, for 15 minutes; probe 75e F4 from a
 * sibling subdomain).
 */
export function isCrossSiteNavigation(request: Request): boolean {
  const site = request.headers.get("sec-fetch-site");
  return (isCrossSite(site) || isSameSite(site)) && isTopLevelNavigation(request);
}

export function crossSiteRequests({ allowedOrigins }: { allowedOrigins: readonly string[] }) {
  const allowed = new Set(allowedOrigins);
  return new Elysia({ name: "palisade.cross-site", seed: allowedOrigins })
    .onRequest(function refuseCrossSite(context) {
      const { request, routeClass } = context as unknown as RequestState;
      const site = request.headers.get("sec-fetch-site");
      // A page on a sibling subdomain (a forum, a blog) is same-site: its image tags spent and
      // blocked its visitors' addresses as another site's did (probe 75c F4).
      if (isSameSite(site) && isPageLoad(request)) {
        throw new AppError(
          "CROSS_SITE_REFUSED",
          "A browser request another origin's page made to load or embed this API (an image, a script, a frame, a no-cors fetch) is refused: it serves none.",
        );
      }
      const crossSite = isCrossSite(site);
      if (!crossSite && !isSameSite(site)) return;
      const origin = request.headers.get("origin");
      if (origin !== null && allowed.has(origin)) return;
      if (routeClass.navigable && isTopLevelNavigation(request)) return;
      throw new AppError(
        "CROSS_SITE_REFUSED",
        crossSite
          ? "A browser request from a page of another site is refused: only the origins this service allows may call it."
          : "A browser request from a page of another origin of this site is refused: only the origins this service allows may call it.",
      );
    })
    .as("global");
}
