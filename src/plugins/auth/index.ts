/**
 * @module
 * The auth stage, as two Elysia macros every route declares one of:
 *
 * - `{ public: true }` — no credential needed.
 * - `{ auth: "user" }` — a signed-in user (bearer token, or the session cookie in browser mode).
 * - `{ auth: "principal" }` — a user or any API key.
 * - `{ auth: { scope: "payments" } }` — a user, or an API key holding the scope.
 * - `{ auth: { role: "admin" } }` — an admin user, or an API key with the `admin` scope.
 *
 * Credentials: `Authorization: Bearer <jwt>`, `Authorization: Bearer pal_…` or `X-API-Key: pal_…`,
 * or the `palisade_session` cookie when neither header is present. A missing or bad credential is
 * 401 UNAUTHENTICATED, an insufficient one 403 FORBIDDEN. Once the principal is known, the route's
 * rate-limit policy is applied again, keyed by the principal. Each declaration is also written into
 * the route's OpenAPI `detail` (`x-palisade-auth` and `security`), which is how a test checks that
 * no route was left undeclared.
 */
import { type DocumentDecoration, Elysia } from "elysia";
import { AppError } from "../../errors";
import type { CredentialVerifier, Verification } from "../../modules/auth/credentials";
import { type Principal, principalRef, type Scope } from "../../modules/auth/principal";
import type { AuditLog } from "../audit/log";
import { cookieNames, readCookie } from "../csrf/cookies";
import type { LimitEnforcer } from "../rate-limit/enforce";
import type { Policy, PolicyTable } from "../rate-limit/policies";
import { stateOf } from "../request-state";
import type { AuthFailureReason, AuthMetrics } from "./metrics";

export type AuthRequirement = "user" | "principal" | { scope: Scope } | { role: "admin" };

export const AUTH_DETAIL_KEY = "x-palisade-auth";

export interface AuthPluginOptions {
  credentials: CredentialVerifier;
  enforceLimits: LimitEnforcer;
  policies: PolicyTable;
  requireTls: boolean;
  metrics: AuthMetrics;
  audit: AuditLog;
}

const BEARER = /^Bearer ([A-Za-z0-9._~+/=-]+)$/;

export function describeRequirement(requirement: AuthRequirement | "public"): string {
  if (typeof requirement === "string") return requirement;
  return "scope" in requirement ? `scope:${requirement.scope}` : `role:${requirement.role}`;
}

/** Whether a principal meets a requirement. Users pass scope checks: scopes narrow keys. */
export function satisfies(principal: Principal, requirement: AuthRequirement): boolean {
  if (requirement === "principal") return true;
  if (requirement === "user") return principal.kind === "user";
  if ("role" in requirement) {
    return principal.kind === "user"
      ? principal.role === "admin"
      : principal.scopes.includes("admin");
  }
  return principal.kind === "user" || principal.scopes.includes(requirement.scope);
}

/** The route's OpenAPI detail: who may call it, in the document and for the declaration test. */
function authDetail(declared: string, security: Record<string, string[]>[]): DocumentDecoration {
  return { [AUTH_DETAIL_KEY]: declared, security } as DocumentDecoration;
}

export function authPlugin(options: AuthPluginOptions) {
  const { credentials, enforceLimits, policies, metrics, audit } = options;
  const names = cookieNames(options.requireTls);
  const single = new Map<Policy, readonly Policy[]>();

  const refuse = (reason: AuthFailureReason, detail: string, tokenGiven: boolean): never => {
    metrics.fail(reason);
    throw new AppError("UNAUTHENTICATED", detail, undefined, {
      "www-authenticate": tokenGiven
        ? 'Bearer realm="palisade", error="invalid_token"'
        : 'Bearer realm="palisade"',
    });
  };

  const authenticate = async (request: Request): Promise<Principal> => {
    const authorization = request.headers.get("authorization");
    const apiKey = request.headers.get("x-api-key");
    if (authorization !== null && apiKey !== null) {
      return refuse("invalid_api_key", "Send one credential, not two.", true);
    }
    let verification: Verification;
    let kind: "token" | "key";
    if (apiKey !== null) {
      kind = "key";
      verification = credentials.verifyApiKey(apiKey);
    } else if (authorization !== null) {
      const match = BEARER.exec(authorization);
      if (!match) return refuse("invalid_token", "Use Authorization: Bearer <token>.", true);
      const credential = match[1]!;
      kind = credential.startsWith("pal_") ? "key" : "token";
      verification =
        kind === "key"
          ? credentials.verifyApiKey(credential)
          : await credentials.verifyAccessToken(credential, "bearer");
    } else {
      const session = readCookie(request.headers.get("cookie"), names.session);
      if (session === null)
        return refuse("missing_credentials", "Authentication is required.", false);
      kind = "token";
      verification = await credentials.verifyAccessToken(session, "cookie");
    }
    if (verification.ok) return verification.principal;
    const reason =
      `${verification.reason}_${kind === "key" ? "api_key" : "token"}` as AuthFailureReason;
    const what = kind === "key" ? "API key" : "token";
    return refuse(reason, `The ${what} is ${verification.reason}.`, true);
  };

  return new Elysia({ name: "palisade.auth" })
    .macro({
      public: (enabled: true) => ({
        detail: authDetail(enabled ? "public" : "undeclared", []),
      }),
      auth: (requirement: AuthRequirement) => ({
        detail: authDetail(
          describeRequirement(requirement),
          requirement === "user"
            ? [{ bearerAuth: [] }, { sessionCookie: [] }]
            : [{ bearerAuth: [] }, { sessionCookie: [] }, { apiKey: [] }],
        ),
        async resolve(context) {
          const { request, path, client, requestId } = stateOf(context);
          const principal = await authenticate(request);
          if (!satisfies(principal, requirement)) {
            metrics.fail("forbidden");
            audit.record({
              type: "auth.forbidden",
              outcome: "denied",
              actor: principalRef(principal),
              ip: client.ip,
              route: `${request.method} ${path}`,
              requestId,
              detail: { requires: describeRequirement(requirement) },
            });
            throw new AppError("FORBIDDEN", "This credential may not do that.");
          }
          const policy = policies.routePolicy(request.method, path);
          if (policy) {
            let list = single.get(policy);
            if (!list) {
              list = [policy];
              single.set(policy, list);
            }
            const headers = await enforceLimits(list, principalRef(principal), {
              method: request.method,
              path,
              client,
              requestId,
            });
            if (headers) Object.assign(context.set.headers, headers);
          }
          return { principal };
        },
      }),
    })
    .as("global");
}
