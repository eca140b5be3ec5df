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
 * or the `palisade_session` cookie when neither header is present (see identify.ts). A missing or
 * bad credential is 401 UNAUTHENTICATED, an insufficient one 403 FORBIDDEN. Each declaration is also written into
 * the route's OpenAPI `detail` (`x-palisade-auth` and `security`), which is how a test checks that
 * no route was left undeclared. The detail also names the error statuses every route can answer
 * (`x-palisade-errors`), which the OpenAPI document turns into problem+json responses.
 */
import { type DocumentDecoration, Elysia } from "elysia";
import { type Clock, systemClock } from "../../clock";
import { AppError } from "../../errors";
import type { AuditLog } from "../audit/log";
import {
  auditedOncePerWindow,
  type FirstInWindow,
  REFUSAL_AUDIT_WINDOW_MS,
} from "../audit/once-per-window";
import { type RequestState, requestStateTypes } from "../request-state";
import type { Identification, Identify } from "./identify";
import type { AuthMetrics } from "./metrics";
import { type Principal, principalRef, type Scope } from "./principal";

export type AuthRequirement = "user" | "principal" | { scope: Scope } | { role: "admin" };

export const AUTH_DETAIL_KEY = "x-palisade-auth";

export interface AuthPluginOptions {
  identify: Identify;
  metrics: AuthMetrics;
  audit: AuditLog;
  /** For the once-a-minute audit of a principal's refusals (`auth.forbidden`); the wall clock by default. */
  clock?: Clock;
  /**
   * What the database says of a credential now: asked before every admin request, reads too
   * (what an admin reads, the audit log and every key, is not for a credential demoted or revoked
   * a moment ago, in the second before this process hears of it). Absent: not asked.
   */
  standing?: CredentialStanding;
}

/**
 * A credential as the database reads it now, rather than the caches a revocation made in another
 * process reaches within a second (the auth feature's reads).
 */
export interface CredentialStanding {
  /** Still an admin's: a key that grants `admin` under its owner's role today, a session not ended. */
  stillAdmin(principal: Principal): boolean;
  /**
   * Still valid at all: a key not revoked or expired whose row and owner are intact (a demoted
   * owner's key is narrowed, not revoked), a session not ended (a demotion ends it).
   */
  stillValid(principal: Principal): boolean;
}

/** Where a refused request was made, for its `auth.forbidden` row. */
export interface RequestPlace {
  /** The method and matched route pattern. */
  route: string;
  ip?: string | null;
  requestId: string;
}

const ADMIN_REQUIREMENT = { role: "admin" } as const;

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

/**
 * Error statuses any route can answer, whatever it does: a malformed request (400), a blocked
 * address or a failed CSRF check (403), a limit (429), a failure (500), an unusable database
 * (503); and 401 where a credential is required. The OpenAPI document lists them for every route
 * as problem+json (plugins/openapi `finish`), next to what the route itself declares.
 */
export const ERRORS_DETAIL_KEY = "x-palisade-errors";
const PIPELINE_ERRORS = [400, 403, 429, 500, 503] as const;
const CREDENTIAL_ERRORS = [400, 401, 403, 429, 500, 503] as const;

/** The route's OpenAPI detail: who may call it, in the document and for the declaration test. */
function authDetail(
  declared: string,
  security: Record<string, string[]>[],
  errors: readonly number[],
): DocumentDecoration {
  return {
    [AUTH_DETAIL_KEY]: declared,
    [ERRORS_DETAIL_KEY]: errors,
    security,
  } as DocumentDecoration;
}

/** Where `transform` leaves the principal it authorized, for `resolve` to hand the handler. */
const AUTHORIZED = Symbol("palisade.authorized");
type Authorized = { [AUTHORIZED]: Principal };

/**
 * The 401 of a credential that was revoked, logged out, demoted or erased while its request was
 * under way (the auth stage's admin re-check, or a handler's ActorGone), counted as any revoked
 * credential is and with the challenge every 401 carries (RFC 9110 section 11.6.1; probe 39b F4).
 */
export function endedCredential(metrics: AuthMetrics, principal: Principal): AppError {
  metrics.fail(principal.kind === "key" ? "revoked_api_key" : "revoked_token");
  return new AppError("UNAUTHENTICATED", "These credentials are no longer valid.", undefined, {
    "www-authenticate": 'Bearer realm="palisade", error="invalid_token"',
  });
}

/**
 * The 403 of a credential that verifies but may not do what it asked: counted, and audited — once
 * a minute per principal and route when `firstInWindow` is given (its later refusals in the minute counted by
 * the metric alone, as the other refusals audited once a window are): a 403 refuses without
 * counting towards any lockout, and a row each let one account write 60 rows a minute per key it
 * held, kept 90 days (probe 83b F2: ~5 GB a principal).
 */
export function forbidden(
  {
    metrics,
    audit,
    firstInWindow,
    clock = systemClock,
  }: Pick<AuthPluginOptions, "metrics" | "audit" | "clock"> & { firstInWindow?: FirstInWindow },
  principal: Principal,
  place: RequestPlace,
  requirement: AuthRequirement,
): AppError {
  metrics.fail("forbidden");
  const actor = principalRef(principal);
  // Per route too: one refusal must not hide the principal's next ones elsewhere for the minute
  // (probe 83g F4: a 403 on a harmless route, then the admin routes tried unaudited).
  const key = `${actor} ${place.route}`;
  if (firstInWindow?.("forbidden", key, clock.now(), REFUSAL_AUDIT_WINDOW_MS) !== false) {
    audit.record({
      type: "auth.forbidden",
      outcome: "denied",
      actor,
      ip: place.ip,
      route: place.route,
      requestId: place.requestId,
      detail: { requires: describeRequirement(requirement) },
    });
  }
  return new AppError("FORBIDDEN", "This credential may not do that.");
}

/**
 * The answer to a credential that was an admin's when its request was let by and is not now: the
 * 403 the auth stage gives it once its caches catch up when it still verifies (a demoted owner's
 * key, narrowed to a user's scopes: telling its client to discard it would throw away a working
 * key; probe 40b F3), the 401 of an ended credential otherwise.
 */
export function lostAdmin(
  deps: Pick<AuthPluginOptions, "metrics" | "audit"> & { standing: CredentialStanding },
  principal: Principal,
  place: RequestPlace,
): AppError {
  return deps.standing.stillValid(principal)
    ? forbidden(deps, principal, place, ADMIN_REQUIREMENT)
    : endedCredential(deps.metrics, principal);
}

export function authPlugin(options: AuthPluginOptions) {
  const { identify, metrics, audit, standing } = options;
  const forbiddenOnce = auditedOncePerWindow(audit, "auth.forbidden");

  /** The principal a request identified as, or 401 (counted) when it has none or a bad one. */
  const authenticated = (found: Identification): Principal => {
    if (found.status === "ok") return found.principal;
    const [reason, detail] =
      found.status === "none"
        ? (["missing_credentials", "Authentication is required."] as const)
        : ([found.reason, found.detail] as const);
    metrics.fail(reason);
    throw new AppError("UNAUTHENTICATED", detail, undefined, {
      "www-authenticate":
        found.status === "none"
          ? 'Bearer realm="palisade"'
          : 'Bearer realm="palisade", error="invalid_token"',
    });
  };

  /**
   * The principal, once it is known to meet the requirement; throws 401 or 403 otherwise. A
   * revocation made in another process reaches this one's caches within a second; an admin
   * change must not be made in that second by the credential just revoked, logged out or demoted
   * (a key it minted would outlive it), so it is checked against the database too.
   */
  const authorize = (
    requirement: AuthRequirement,
    found: Identification,
    request: Request,
    route: string,
    client: RequestState["client"],
    requestId: string,
  ): Principal => {
    const principal = authenticated(found);
    // Built only for a refusal: every admitted request passes here.
    const place = (): RequestPlace => ({
      route: `${request.method} ${route}`,
      ip: client.ip,
      requestId,
    });
    const asksAdmin =
      standing !== undefined && typeof requirement === "object" && "role" in requirement;
    if (!satisfies(principal, requirement)) {
      // A key this process still holds as it was verified (without `admin`) may have been revoked
      // by another process in the second before this one reads it: the 401 of an ended credential
      // then, whichever process it reaches, not a 403 counted and audited as a refusal (probe
      // 41a F3). Asked of admin requests only, and only when refused.
      if (asksAdmin && !standing.stillValid(principal)) throw endedCredential(metrics, principal);
      throw forbidden(
        { ...options, firstInWindow: forbiddenOnce },
        principal,
        place(),
        requirement,
      );
    }
    if (asksAdmin && !standing.stillAdmin(principal)) {
      throw lostAdmin({ metrics, audit, standing }, principal, place());
    }
    return principal;
  };

  const authorizeOnceVerified = async (
    requirement: AuthRequirement,
    request: Request,
    route: string,
    client: RequestState["client"],
    requestId: string,
  ): Promise<Principal> =>
    authorize(requirement, await identify(request), request, route, client, requestId);

  return new Elysia({ name: "palisade.auth" })
    .use(requestStateTypes())
    .macro({
      public: (enabled: true) => ({
        detail: authDetail(enabled ? "public" : "undeclared", [], PIPELINE_ERRORS),
      }),
      auth: (requirement: AuthRequirement) => ({
        detail: authDetail(
          describeRequirement(requirement),
          requirement === "user"
            ? [{ bearerAuth: [] }, { sessionCookie: [] }]
            : [{ bearerAuth: [] }, { sessionCookie: [] }, { apiKey: [] }],
          CREDENTIAL_ERRORS,
        ),
        // Authentication runs in `transform`, before Elysia validates the body, query and path
        // parameters: an anonymous caller gets 401, not 422 with the route's schema. It waits
        // only for a token that must still be verified (identify.ts). `resolve` (after
        // validation) hands the handler the principal `transform` authorized; it reads the
        // context's fields one by one, because a hook handed the whole context makes Elysia
        // parse every cookie and header of every request on the route.
        transform(context) {
          const { request, route, client, requestId } = context as unknown as RequestState & {
            route: string;
          };
          const found = identify.now(request);
          if (found === undefined) {
            return authorizeOnceVerified(requirement, request, route, client, requestId).then(
              (principal) => {
                (context as unknown as Authorized)[AUTHORIZED] = principal;
              },
            );
          }
          (context as unknown as Authorized)[AUTHORIZED] = authorize(
            requirement,
            found,
            request,
            route,
            client,
            requestId,
          );
        },
        resolve(context) {
          return { principal: (context as unknown as Authorized)[AUTHORIZED] };
        },
      }),
    })
    .as("global");
}
