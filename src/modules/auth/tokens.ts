/**
 * @module
 * Access tokens are JWTs signed with HS256 through jose: `sub` (user id), `role`, `fam` (the
 * refresh family, so logout can end them), `jti`, `iat`, `exp`, issuer and audience. Verification
 * accepts HS256 only (so `alg: none` and RS256-with-the-secret-as-public-key are refused), checks
 * issuer, audience and expiry with 30 s of clock skew.
 *
 * Refresh tokens are 256 random bits, base64url, stored only as their SHA-256.
 */
import { errors, jwtVerify, SignJWT } from "jose";

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

export function signingKey(secret: string): Uint8Array {
  return new TextEncoder().encode(secret);
}

export function signAccessToken(
  key: Uint8Array,
  claims: { sub: string; role: "user" | "admin"; fam: string },
  nowMs: number,
  ttlSeconds: number,
): Promise<string> {
  const iat = Math.floor(nowMs / 1000);
  return new SignJWT({ role: claims.role, fam: claims.fam })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(claims.sub)
    .setJti(crypto.randomUUID())
    .setIssuer(TOKEN_ISSUER)
    .setAudience(TOKEN_AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttlSeconds)
    .sign(key);
}

export async function verifyAccessToken(
  key: Uint8Array,
  token: string,
  nowMs: number,
): Promise<TokenVerdict> {
  try {
    const { payload } = await jwtVerify(token, key, {
      algorithms: ["HS256"],
      issuer: TOKEN_ISSUER,
      audience: TOKEN_AUDIENCE,
      clockTolerance: CLOCK_SKEW_SECONDS,
      currentDate: new Date(nowMs),
      requiredClaims: ["sub", "exp", "iat", "jti"],
    });
    const role = payload.role;
    if ((role !== "user" && role !== "admin") || typeof payload.fam !== "string") {
      return { ok: false, reason: "invalid" };
    }
    return { ok: true, claims: payload as unknown as AccessClaims };
  } catch (error) {
    if (error instanceof errors.JWTExpired) return { ok: false, reason: "expired" };
    return { ok: false, reason: "invalid" };
  }
}

export function generateRefreshToken(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
}

export function sha256Hex(value: string): string {
  return new Bun.CryptoHasher("sha256").update(value).digest("hex");
}
