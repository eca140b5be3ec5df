import { t } from "elysia";
import { API_KEY_SCOPES } from "../../db/schema/auth";
import { JsonInteger } from "../../plugins/openapi/json-integer";

/** The scopes an API key may hold: the stored list itself, so the two cannot differ. */
export const ScopeSchema = t.UnionEnum(API_KEY_SCOPES);

/**
 * The bound on an email as sent: any spelling of an address of at most 254 characters once
 * normalised (decomposed accents, fullwidth letters, spaces around it), which is the bound the
 * account's address is held to (email.ts). At 254 here a registered address's decomposed spelling
 * was refused at login (probe 38a F4).
 */
const EMAIL_AS_SENT_MAX = 1024;

export const Credentials = t.Object({
  email: t.String({
    minLength: 3,
    maxLength: EMAIL_AS_SENT_MAX,
    description:
      "At most 254 characters once NFKC-normalised and trimmed, the domain IDNA-mapped to ASCII without a trailing dot; invisible and control characters are refused",
  }),
  password: t.String({ minLength: 1, maxLength: 1024 }),
});

export const LoginQuery = t.Object({
  mode: t.Optional(
    t.Union([t.Literal("token"), t.Literal("cookie")], {
      description: "cookie: tokens come as HttpOnly cookies for browser clients",
    }),
  ),
});

export const RegisteredUser = t.Object({
  email: t.String(),
  role: t.Union([t.Literal("user"), t.Literal("admin")]),
});

export const TokenPair = t.Object({
  accessToken: t.String(),
  refreshToken: t.String(),
  tokenType: t.Literal("Bearer"),
  expiresIn: JsonInteger({ description: "Seconds until the access token expires" }),
});

export const CookieSession = t.Object({
  tokenType: t.Literal("Cookie"),
  expiresIn: JsonInteger(),
  csrfToken: t.String({
    description:
      "X-CSRF-Token for the session cookie this answer sets (its palisade_csrf cookie is set beside it): a token held from before is bound to the session cookie this one replaces",
  }),
});

export const LoginResponse = t.Union([TokenPair, CookieSession]);

export const RefreshBody = t.Object({
  refreshToken: t.Optional(
    t.String({ maxLength: 512, description: "Omit in cookie mode: the refresh cookie is used" }),
  ),
});

export const Me = t.Union([
  t.Object({
    kind: t.Literal("user"),
    id: t.String(),
    email: t.String(),
    role: t.Union([t.Literal("user"), t.Literal("admin")]),
  }),
  t.Object({
    kind: t.Literal("key"),
    id: t.String(),
    name: t.String(),
    scopes: t.Array(ScopeSchema),
  }),
]);
