/**
 * @module
 * Access tokens are JWTs signed with HS256 through jose: `sub` (user id), `role`, `fam` (the
 * refresh family, so logout can end them), `jti`, `iat`, `exp`, issuer and audience, and a `kid`
 * header naming the key. Verification accepts HS256 only (so `alg: none` and
 * RS256-with-the-secret-as-public-key are refused), checks issuer, audience and expiry with 30 s of
 * clock skew, and picks the key by `kid`: the current one, or the previous one while a rotation is
 * under way (JWT_PREVIOUS_SECRET_KEY), so rotating the secret logs nobody out.
 *
 * Every claim the service reads is checked for its type after the signature: a validly signed
 * token with `sub` as an object or `exp` as a string is refused as invalid, never passed on. A
 * token whose lifetime (exp − iat) is longer than the configured one (plus the skew), or whose
 * `iat` is in the future beyond the skew, is refused too: lowering ACCESS_TOKEN_EXPIRE_MINUTES
 * must shorten what is accepted, not only what is issued, since revocations are remembered in
 * memory for that long.
 *
 * Refresh tokens are `pal_rt_` and 256 random bits in base64url, stored only as their SHA-256.
 * The prefix is what the log and error-report scrubbers and the request-id check recognise, as
 * they do API keys (`pal_live_…`): a client that puts its token in the wrong header or a path does
 * not copy it into the logs, the audit log or Sentry (probe 30b F2). Tokens issued before the
 * prefix have none and are accepted until they are rotated.
 *
 * jose is imported on the first signature or verification, not at start (46 modules, ~20 ms of
 * CPU and ~2 MB on the shared bench machine): a start serves `/health` without it, and the module
 * cache makes every later `import()` the same module at once.
 */
import type { JWTHeaderParameters } from "jose";

export const TOKEN_ISSUER = "palisade";
export const TOKEN_AUDIENCE = "palisade-api";
const CLOCK_SKEW_SECONDS = 30;

export interface AccessClaims {
  sub: string;
  role: "user" | "admin";
  fam: string;
  jti: string;
  iat: number;
  exp: number;
}

export type TokenVerdict =
  | { ok: true; claims: AccessClaims }
  | { ok: false; reason: "expired" | "invalid" };

export interface SigningKey {
  /** Derived from the secret by a one-way hash: names the key without revealing it. */
  kid: string;
  key: Uint8Array;
}

export interface SigningKeys {
  current: SigningKey;
  previous: SigningKey | null;
}

export function signingKey(secret: string): SigningKey {
  const kid = new Bun.CryptoHasher("sha256").update(`palisade-kid:${secret}`).digest("base64url");
  return { kid: kid.slice(0, 12), key: new TextEncoder().encode(secret) };
}

export function signingKeys(secret: string, previous: string | null): SigningKeys {
  return { current: signingKey(secret), previous: previous === null ? null : signingKey(previous) };
}

export async function signAccessToken(
  { kid, key }: SigningKey,
  claims: { sub: string; role: "user" | "admin"; fam: string },
  nowMs: number,
  ttlSeconds: number,
): Promise<string> {
  const { SignJWT } = await import("jose");
  const iat = Math.floor(nowMs / 1000);
  return new SignJWT({ role: claims.role, fam: claims.fam })
    .setProtectedHeader({ alg: "HS256", typ: "JWT", kid })
    .setSubject(claims.sub)
    .setJti(crypto.randomUUID())
    .setIssuer(TOKEN_ISSUER)
    .setAudience(TOKEN_AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttlSeconds)
    .sign(key);
}

/** An identifier claim: a non-empty string of bounded length. */
function isId(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= 128;
}

function isSeconds(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** The claims the service reads, each of its type, or null. */
function accessClaimsOf(payload: Record<string, unknown>): AccessClaims | null {
  const { sub, role, fam, jti, iat, exp } = payload;
  if (!isId(sub) || !isId(fam) || !isId(jti)) return null;
  if (role !== "user" && role !== "admin") return null;
  if (!isSeconds(iat) || !isSeconds(exp)) return null;
  return { sub, role, fam, jti, iat, exp };
}

/**
 * Whether each of the token's three parts is base64url as an encoder writes it: no padding, and
 * no bits set past the last byte. A decoder ignores both, so without this check one token has
 * several spellings that verify (`=` appended, the signature's last character with its two unused
 * bits changed: probe 32a F3), each a cache entry and a verification of its own.
 */
export function isCanonicalCompactJws(token: string): boolean {
  const parts = token.split(".");
  if (parts.length !== 3) return false;
  for (const part of parts) {
    if (!/^[A-Za-z0-9_-]*$/.test(part)) return false;
    if (Buffer.from(part, "base64url").toString("base64url") !== part) return false;
  }
  return true;
}

export async function verifyAccessToken(
  keys: SigningKeys,
  token: string,
  nowMs: number,
  /** The configured access-token lifetime: a token claiming a longer one is refused. */
  maxLifetimeSeconds: number,
): Promise<TokenVerdict> {
  if (!isCanonicalCompactJws(token)) return { ok: false, reason: "invalid" };
  const { errors, jwtVerify } = await import("jose");
  // Tokens from before `kid` existed carry none: they were signed with the current key.
  const keyFor = (header: JWTHeaderParameters): Uint8Array => {
    if (header.kid === undefined || header.kid === keys.current.kid) return keys.current.key;
    if (keys.previous !== null && header.kid === keys.previous.kid) return keys.previous.key;
    throw new errors.JWSSignatureVerificationFailed("unknown kid");
  };
  try {
    const { payload } = await jwtVerify(token, keyFor, {
      algorithms: ["HS256"],
      issuer: TOKEN_ISSUER,
      audience: TOKEN_AUDIENCE,
      clockTolerance: CLOCK_SKEW_SECONDS,
      currentDate: new Date(nowMs),
      requiredClaims: ["sub", "exp", "iat", "jti"],
    });
    const claims = accessClaimsOf(payload);
    if (claims === null) return { ok: false, reason: "invalid" };
    if (claims.iat > nowMs / 1000 + CLOCK_SKEW_SECONDS) return { ok: false, reason: "invalid" };
    if (claims.exp - claims.iat > maxLifetimeSeconds + CLOCK_SKEW_SECONDS) {
      return { ok: false, reason: "invalid" };
    }
    return { ok: true, claims };
  } catch (error) {
    if (error instanceof errors.JWTExpired) return { ok: false, reason: "expired" };
    return { ok: false, reason: "invalid" };
  }
}

/** What every refresh token issued begins with (see the module's comment). */
export const REFRESH_TOKEN_PREFIX = "pal_rt_";

export function generateRefreshToken(): string {
  const random = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
  return REFRESH_TOKEN_PREFIX + random;
}

/** One-shot SHA-256 (Bun.SHA256.hash): half the cost of building a CryptoHasher, on every request. */
export function sha256Hex(value: string): string {
  return Bun.SHA256.hash(value, "hex");
}
