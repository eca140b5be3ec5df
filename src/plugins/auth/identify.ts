/**
 * @module
 * Finds and verifies a request's credential, once per request. The rate-limit stage asks first (an
 * authenticated request is counted against its principal, not its address); the auth stage asks
 * again and gets the same answer without verifying twice. A bad credential does not fail the
 * rate-limit stage — it is counted by address — and is refused by the auth stage.
 */

import { cookieNames, readCookie } from "../csrf/cookies";
import type { CredentialVerifier } from "./credentials";
import type { AuthFailureReason } from "./metrics";
import type { Principal } from "./principal";

export type Identification =
  | { status: "none" }
  | { status: "ok"; principal: Principal }
  | { status: "bad"; reason: AuthFailureReason; detail: string };

/** An authentication scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are Bearer. */
const BEARER_SCHEME = /^bearer /i;
/** What a bearer credential may hold (RFC 6750's b64token). */
const B64TOKEN = /^[A-Za-z0-9._~+/=-]+$/;

/** The credential of `Authorization: Bearer <credential>` (the scheme in any case), else null. */
export function bearerCredential(authorization: string | null): string | null {
  if (authorization === null || !BEARER_SCHEME.test(authorization)) return null;
  return authorization.slice("bearer ".length);
}

export interface Identify {
  (request: Request): Promise<Identification>;
  /**
   * Whether the request carries a credential at all (Authorization, X-API-Key or the session
   * cookie, well-formed or not): one that does not is identified as none without waiting.
   */
  carriesCredential(request: Request): boolean;
}

export function createIdentify(credentials: CredentialVerifier, requireTls: boolean): Identify {
  const sessionCookie = cookieNames(requireTls).session;
  const seen = new WeakMap<Request, Promise<Identification>>();

  const identifyOnce = async (request: Request): Promise<Identification> => {
    const authorization = request.headers.get("authorization");
    const apiKey = request.headers.get("x-api-key");
    if (authorization !== null && apiKey !== null) {
      return { status: "bad", reason: "invalid_api_key", detail: "Send one credential, not two." };
    }
    let kind: "token" | "key";
    let verification: Awaited<ReturnType<CredentialVerifier["verifyAccessToken"]>>;
    if (apiKey !== null) {
      kind = "key";
      verification = credentials.verifyApiKey(apiKey);
    } else if (authorization !== null) {
      const credential = bearerCredential(authorization);
      if (credential === null || !B64TOKEN.test(credential)) {
        return {
          status: "bad",
          reason: "invalid_token",
          detail: "Use Authorization: Bearer <token>.",
        };
      }
      kind = credential.startsWith("pal_") ? "key" : "token";
      verification =
        kind === "key"
          ? credentials.verifyApiKey(credential)
          : await credentials.verifyAccessToken(credential, "bearer");
    } else {
      const session = readCookie(request.headers.get("cookie"), sessionCookie);
      if (session === null) return { status: "none" };
      kind = "token";
      verification = await credentials.verifyAccessToken(session, "cookie");
    }
    if (verification.ok) return { status: "ok", principal: verification.principal };
    const what = kind === "key" ? "API key" : "token";
    return {
      status: "bad",
      reason: `${verification.reason}_${kind === "key" ? "api_key" : "token"}` as AuthFailureReason,
      detail: `The ${what} is ${verification.reason}.`,
    };
  };

  // Most requests carry no credential at all: that answer needs no verifying and no memo, and
  // one settled promise (owned by this identify) serves them all.
  const none: Promise<Identification> = Promise.resolve({ status: "none" });
  const carriesCredential = (headers: Headers): boolean =>
    headers.has("authorization") ||
    headers.has("x-api-key") ||
    readCookie(headers.get("cookie"), sessionCookie) !== null;

  const identify = (request: Request) => {
    let result = seen.get(request);
    if (result === undefined) {
      if (!carriesCredential(request.headers)) return none;
      result = identifyOnce(request);
      seen.set(request, result);
    }
    return result;
  };
  return Object.assign(identify, {
    carriesCredential: (request: Request) => carriesCredential(request.headers),
  });
}
