/**
 * @module
 * `/api/auth`: register, login (bearer tokens, or cookies for browsers), refresh, logout, me.
 */
import { Elysia, t } from "elysia";
import { AppError, problemResponses } from "../../errors";
import type { authPlugin } from "../../plugins/auth";
import type { AuthMetrics } from "../../plugins/auth/metrics";
import { type CsrfIssuer, CsrfTokenResponse } from "../../plugins/csrf";
import {
  type CookieNames,
  cookieNames,
  readCookie,
  sendsHeaderCredential,
  serializeCookie,
} from "../../plugins/csrf/cookies";
import type { LimitCharge, LimitEnforcer } from "../../plugins/rate-limit/enforce";
import { LOGIN_ACCOUNT_POLICY_LABEL } from "../../plugins/rate-limit/metrics";
import type { PolicyTable } from "../../plugins/rate-limit/policies";
import type { RequestState } from "../../plugins/request-state";
import type { RouteClass } from "../../plugins/route-class";
import { INVALID_EMAIL_MESSAGES } from "./email";
import { Credentials, LoginQuery, LoginResponse, Me, RefreshBody, RegisteredUser } from "./model";
import { PasswordWorkBusy } from "./password-work";
import { type AuthService, accountLimitKey, type IssuedTokens, type RequestMeta } from "./service";

export interface AuthModuleOptions {
  issueCsrf: CsrfIssuer;
  service: AuthService;
  auth: ReturnType<typeof authPlugin>;
  enforceLimits: LimitEnforcer;
  policies: PolicyTable;
  metrics: AuthMetrics;
  requireTls: boolean;
  enumerationResistance: boolean;
}

type SetLike = { headers: Record<string, unknown>; status?: number | string };

function meta(
  { client, requestId }: Pick<RequestState, "client" | "requestId">,
  route: string,
): RequestMeta {
  return { client, requestId, route };
}

function sessionCookies(names: CookieNames, tokens: IssuedTokens, secure: boolean): string[] {
  return [
    serializeCookie(names.session, tokens.accessToken, {
      maxAgeSeconds: tokens.expiresIn,
      httpOnly: true,
      secure,
    }),
    serializeCookie(names.refresh, tokens.refreshToken, {
      maxAgeSeconds: tokens.refreshExpiresIn,
      httpOnly: true,
      secure,
    }),
  ];
}

function clearedCookies(names: CookieNames, secure: boolean): string[] {
  return [names.session, names.refresh].map((name) =>
    serializeCookie(name, "", { maxAgeSeconds: 0, httpOnly: true, secure }),
  );
}

/** The auth routes' classes: sign-up, sign-in and refresh have policies of their own. */
export const authRouteClasses: readonly RouteClass[] = [
  { routes: ["POST /api/auth/register"], policy: "register" },
  { routes: ["POST /api/auth/login"], policy: "login" },
  { routes: ["POST /api/auth/refresh"], policy: "refresh" },
  { routes: ["POST /api/auth/logout", "GET /api/auth/me", "GET /api/auth/csrf"] },
];

export function authModule(options: AuthModuleOptions) {
  const { service, enforceLimits, policies, metrics, requireTls } = options;
  const names = cookieNames(requireTls);
  // The per-account sign-in limit: its budget is spent by whoever signs in to the account, so a
  // refusal is no violation of the refused request's address (probe 24b F2: an attacker spending a
  // victim's budget got the victim's office, or an allow-listed monitor, blocked). An id of its own,
  // so its refusals are counted and audited apart from the per-address limit's (probe 24c F6).
  const accountLoginPolicy = [
    { ...policies.get("login"), id: LOGIN_ACCOUNT_POLICY_LABEL, refusalIsViolation: false },
  ] as const;
  const isSignInPolicy = (policy: { id: string }) => policy.id === "login";

  /**
   * The outcome of a sign-in or sign-up; refused by the full password queue, the request is no
   * attempt, and what the rate limits charged it is given back (password-work.ts).
   */
  const refundedIfBusy = <T>(
    outcome: Promise<T>,
    ...charges: (LimitCharge | undefined)[]
  ): Promise<T> =>
    outcome.catch((error: unknown) => {
      if (error instanceof PasswordWorkBusy) {
        for (const charge of charges) if (charge) enforceLimits.refund(charge);
      }
      throw error;
    });

  const respondWithTokens = (set: SetLike, tokens: IssuedTokens, mode: string | undefined) => {
    if (mode === "cookie") {
      // A token bound to the session cookie this answer sets: the page's token from before, bound
      // to the session cookie it replaces, was refused from the first refresh on (probe 82c F2).
      const csrf = options.issueCsrf.forSession(tokens.accessToken);
      set.headers["set-cookie"] = [...sessionCookies(names, tokens, requireTls), csrf.cookie];
      return { tokenType: "Cookie" as const, expiresIn: tokens.expiresIn, csrfToken: csrf.token };
    }
    return {
      accessToken: tokens.accessToken,
      refreshToken: tokens.refreshToken,
      tokenType: "Bearer" as const,
      expiresIn: tokens.expiresIn,
    };
  };

  return new Elysia({ name: "palisade.module.auth", prefix: "/api/auth" })
    .use(options.auth)
    .post(
      "/register",
      async ({ body, set, client, requestId, limitCharge }) => {
        const outcome = await refundedIfBusy(
          service.register(
            body.email,
            body.password,
            meta({ client, requestId }, "POST /api/auth/register"),
          ),
          limitCharge,
        );
        switch (outcome.code) {
          case "INVALID_EMAIL":
            // Names the field and the rule, never the value (it may hold invisible characters).
            throw new AppError("VALIDATION_FAILED", "The email address is not valid.", [
              {
                field: "body/email",
                message: INVALID_EMAIL_MESSAGES[outcome.reason],
              },
            ]);
          case "WEAK_PASSWORD":
            throw new AppError("VALIDATION_FAILED", outcome.message, [
              { field: "body/password", message: `${outcome.rule}: ${outcome.message}` },
            ]);
          case "DUPLICATE":
            if (!options.enumerationResistance) {
              throw new AppError("CONFLICT", "An account with this email already exists.");
            }
            // Answered byte for byte like a new account (the same normalised address, the same
            // role), so the endpoint cannot tell who has one.
            set.status = 201;
            return { email: outcome.email, role: "user" as const };
          case "CREATED":
            set.status = 201;
            return { email: outcome.user.email, role: outcome.user.role };
        }
      },
      {
        public: true,
        body: Credentials,
        response: { 201: RegisteredUser, ...problemResponses(409, 422) },
        detail: { tags: ["auth"], summary: "Create an account" },
      },
    )
    .post(
      "/login",
      async ({ body, query, set, request, path, client, requestId, limitCharge }) => {
        const accountKey = accountLimitKey(body.email);
        let accountCharge: LimitCharge | undefined;
        // A sign-in refused for its account (its limit spent, or locked by failed sign-ins) checked
        // no password: the address's sign-in permit it was charged is given back, so whoever spends
        // or locks an account cannot turn its owner's retries into refusals of the owner's address,
        // and those into a block (probe 46a F2). The default policy's permit stays counted: an
        // address sending them without end is still limited and blocked as for any route.
        const refundAddress = () => {
          if (limitCharge) enforceLimits.refund(limitCharge, isSignInPolicy);
        };
        const headers = await enforceLimits(accountLoginPolicy, accountKey, {
          method: request.method,
          path,
          client,
          requestId,
          charged: (charge) => {
            accountCharge = charge;
          },
        }).catch((error: unknown) => {
          if (error instanceof AppError && error.code === "RATE_LIMITED") refundAddress();
          throw error;
        });
        if (headers) Object.assign(set.headers, headers);
        const outcome = await refundedIfBusy(
          service.login(
            body.email,
            body.password,
            meta({ client, requestId }, "POST /api/auth/login"),
          ),
          limitCharge,
          accountCharge,
        );
        if (outcome.code === "LOCKED") {
          refundAddress();
          metrics.fail("locked");
          // The per-account limit's headers said there was room; the lock's answer is Retry-After.
          if (headers) for (const name in headers) delete set.headers[name];
          throw new AppError(
            "RATE_LIMITED",
            "Too many failed sign-ins for this account; try again later.",
            undefined,
            { "retry-after": String(outcome.retryAfterSeconds) },
          );
        }
        if (outcome.code === "INVALID") {
          metrics.fail("bad_password");
          throw new AppError("UNAUTHENTICATED", "The email or password is wrong.");
        }
        return respondWithTokens(set, outcome.tokens, query.mode);
      },
      {
        public: true,
        body: Credentials,
        query: LoginQuery,
        response: { 200: LoginResponse, ...problemResponses(401, 422) },
        detail: { tags: ["auth"], summary: "Sign in: tokens, or cookies with ?mode=cookie" },
      },
    )
    .post(
      "/refresh",
      async ({ body, set, request, client, requestId }) => {
        // Beside a header credential the cookie is not read: CSRF exempts such requests.
        const headerCredential = sendsHeaderCredential(request.headers);
        const fromCookie = headerCredential
          ? null
          : readCookie(request.headers.get("cookie"), names.refresh);
        const token = body?.refreshToken ?? fromCookie;
        if (!token) {
          metrics.fail("invalid_refresh");
          throw new AppError(
            "UNAUTHENTICATED",
            headerCredential
              ? "A refresh token is required in the body: the refresh cookie is not read beside an Authorization or X-API-Key header."
              : "A refresh token is required.",
          );
        }
        const outcome = await service.refresh(
          token,
          meta({ client, requestId }, "POST /api/auth/refresh"),
        );
        if (outcome.code !== "OK") {
          metrics.fail(outcome.code === "REUSED" ? "refresh_reused" : "invalid_refresh");
          if (fromCookie) set.headers["set-cookie"] = clearedCookies(names, requireTls);
          throw new AppError("UNAUTHENTICATED", "The refresh token is not valid.");
        }
        return respondWithTokens(
          set,
          outcome.tokens,
          body?.refreshToken ? "token" : fromCookie ? "cookie" : "token",
        );
      },
      {
        public: true,
        body: t.Optional(RefreshBody),
        response: { 200: LoginResponse, ...problemResponses(401, 422) },
        detail: {
          tags: ["auth"],
          summary:
            "Rotate the refresh token; sent again within 10 s it gets the same successor, reused later or further behind it revokes its whole family",
        },
      },
    )
    .post(
      "/logout",
      ({ principal, set, client, requestId }) => {
        if (principal.kind !== "user")
          throw new AppError("FORBIDDEN", "Only a session can log out.");
        service.logout(
          principal.id,
          principal.familyId,
          meta({ client, requestId }, "POST /api/auth/logout"),
        );
        if (principal.via === "cookie")
          set.headers["set-cookie"] = clearedCookies(names, requireTls);
        set.status = 204;
        return undefined;
      },
      {
        auth: "user",
        response: { 204: t.Void({ description: "Logged out" }) },
        detail: { tags: ["auth"], summary: "Revoke this session's refresh family" },
      },
    )
    .get("/csrf", ({ request, set }) => options.issueCsrf.forRequest(request, set), {
      public: true,
      response: { 200: CsrfTokenResponse },
      detail: {
        tags: ["auth"],
        summary:
          "Issue a CSRF token (body and cookie) for browser clients using the session cookie",
      },
    })
    .get(
      "/me",
      ({ principal }) => {
        if (principal.kind === "key") {
          return {
            kind: "key" as const,
            id: principal.id,
            name: principal.name,
            scopes: [...principal.scopes],
          };
        }
        const user = service.findUser(principal.id);
        if (!user) throw new AppError("UNAUTHENTICATED", "The account no longer exists.");
        return { kind: "user" as const, id: user.id, email: user.email, role: user.role };
      },
      {
        auth: "principal",
        response: { 200: Me },
        detail: { tags: ["auth"], summary: "Who this credential is" },
      },
    );
}
