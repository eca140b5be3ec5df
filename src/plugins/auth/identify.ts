/**
 * @module
 * Finds and verifies a request's credential, once per request. The rate-limit stage asks first (an
 * authenticated request is counted against its principal, not its address); the auth stage asks
 * again and gets the same answer without verifying twice. A bad credential does not fail the
 * rate-limit stage — it is counted by address — and is refused by the auth stage.
 *
 * Only an access token not yet cached needs waiting for (its signature check is asynchronous): an
 * API key, a cached token and no credential are known at once (`identify.now`), so those requests
 * pass the rate-limit and auth stages without waiting a turn for an answer that is already there.
 * Over HTTP each wait costs more than its own microtask (the answer goes out later, and the client
 * is woken more often); see README, Performance.
 */

import { cookieNames, readCookie, sendsHeaderCredential } from "../csrf/cookies";
import type { CredentialVerifier, Verification } from "./credentials";
import type { AuthFailureReason } from "./metrics";
import type { Principal } from "./principal";

export type Identification =
  | { status: "none" }
  /**
   * `ambient`: the credential is the session cookie, which a browser attaches to any same-site
   * page's request on its own (the rate limiter counts such a request as the user only with a
   * valid CSRF token: plugins/rate-limit).
   */
  | { status: "ok"; principal: Principal; ambient?: true }
  | { status: "bad"; reason: AuthFailureReason; detail: string };

/** An authentication scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are Bearer. */
const BEARER_SCHEME = /^bearer /i;
/** What a bearer credential may hold (RFC 6750's b64token). */
const B64TOKEN = /^[A-Za-z0-9._~+/=-]+$/;

/**
 * Whether a bearer credential has a JWT's shape: RFC 6750's b64token alphabet, three non-empty parts
 * between two dots. Anything else is an API key's: a generated `pal_` key, or a bootstrap key of any
 * spelling API_KEYS takes (`!`, `#`, a space inside), which read as a token was refused and, on
 * `/metrics`, counted as a wrong metrics token until the scraper's address was blocked (probes 38c
 * F2, 39b F1).
 */
function hasTokenShape(credential: string): boolean {
  if (!B64TOKEN.test(credential)) return false;
  const first = credential.indexOf(".");
  const second = credential.indexOf(".", first + 1);
  return (
    first > 0 &&
    second > first + 1 &&
    second < credential.length - 1 &&
    credential.indexOf(".", second + 1) === -1
  );
}

/**
 * The credential of `Authorization: Bearer <credential>` (the scheme in any case, one or more
 * spaces after it, as RFC 9110 §11.4 writes `1*SP`), else null. Two spaces were read as part of the
 * credential: a valid token refused, and on `/metrics` counted towards the address's block (probe
 * 85f F6).
 */
export function bearerCredential(authorization: string | null): string | null {
  if (authorization === null || !BEARER_SCHEME.test(authorization)) return null;
  return authorization.slice("bearer ".length).replace(/^ +/, "");
}

export interface Identify {
  (request: Request): Promise<Identification>;
  /**
   * The identification, when it is known without waiting: no credential, an API key (verified
   * synchronously), a token this process has verified and cached, or one whose verification has
   * finished. Otherwise starts the verification (as `identify` does) and returns undefined: the
   * caller then awaits `identify`. One verification per request either way.
   */
  now(request: Request): Identification | undefined;
  /**
   * Whether the request carries a credential at all (Authorization, X-API-Key or the session
   * cookie, well-formed or not): one that does not is identified as none without waiting.
   */
  carriesCredential(request: Request): boolean;
}

const NONE: Identification = { status: "none" };

export function createIdentify(credentials: CredentialVerifier, requireTls: boolean): Identify {
  const sessionCookie = cookieNames(requireTls).session;
  /** What each request asked about was identified as, or the verification still running. */
  const seen = new WeakMap<Request, Identification | Promise<Identification>>();

  const identification = (
    verification: Verification,
    kind: "token" | "key",
    ambient = false,
  ): Identification => {
    if (verification.ok) {
      return ambient
        ? { status: "ok", principal: verification.principal, ambient }
        : { status: "ok", principal: verification.principal };
    }
    const what = kind === "key" ? "API key" : "token";
    return {
      status: "bad",
      reason: `${verification.reason}_${kind === "key" ? "api_key" : "token"}` as AuthFailureReason,
      detail: `The ${what} is ${verification.reason}.`,
    };
  };

  /** A token's identification: at once when this process has it cached, else once verified. */
  const ofToken = (
    token: string,
    via: "bearer" | "cookie",
  ): Identification | Promise<Identification> => {
    const verification = credentials.accessToken(token, via);
    const ambient = via === "cookie";
    return verification instanceof Promise
      ? verification.then((verified) => identification(verified, "token", ambient))
      : identification(verification, "token", ambient);
  };

  const identifyOnce = (request: Request): Identification | Promise<Identification> => {
    const authorization = request.headers.get("authorization");
    const apiKey = request.headers.get("x-api-key");
    if (authorization !== null && apiKey !== null) {
      return { status: "bad", reason: "invalid_api_key", detail: "Send one credential, not two." };
    }
    if (apiKey !== null) return identification(credentials.verifyApiKey(apiKey), "key");
    if (authorization !== null) {
      const credential = bearerCredential(authorization);
      if (credential === null || credential === "") {
        return {
          status: "bad",
          reason: "invalid_token",
          detail: "Use Authorization: Bearer <token>.",
        };
      }
      return credential.startsWith("pal_") || !hasTokenShape(credential)
        ? identification(credentials.verifyApiKey(credential), "key")
        : ofToken(credential, "bearer");
    }
    const session = readCookie(request.headers.get("cookie"), sessionCookie);
    return session === null ? NONE : ofToken(session, "cookie");
  };

  const carriesCredential = (headers: Headers): boolean =>
    sendsHeaderCredential(headers) || readCookie(headers.get("cookie"), sessionCookie) !== null;

  /** The request's identification or its verification in progress, started at the first ask. */
  const lookUp = (request: Request): Identification | Promise<Identification> => {
    let result = seen.get(request);
    if (result === undefined) {
      // Most requests carry no credential at all: that answer needs no verifying and no memo.
      if (!carriesCredential(request.headers)) return NONE;
      const found = identifyOnce(request);
      result =
        found instanceof Promise
          ? found.then((settled) => {
              seen.set(request, settled);
              return settled;
            })
          : found;
      seen.set(request, result);
    }
    return result;
  };

  const identify = (request: Request): Promise<Identification> => {
    try {
      const result = lookUp(request);
      return result instanceof Promise ? result : Promise.resolve(result);
    } catch (error) {
      return Promise.reject(error);
    }
  };
  return Object.assign(identify, {
    now: (request: Request) => {
      const result = lookUp(request);
      return result instanceof Promise ? undefined : result;
    },
    carriesCredential: (request: Request) => carriesCredential(request.headers),
  });
}
