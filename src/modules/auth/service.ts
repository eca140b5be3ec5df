/**
 * @module
 * Accounts and sessions: register, login (constant work whether the account exists), refresh with
 * rotation and reuse detection, logout, and the operator's user commands. Outcomes are values; the
 * routes turn them into responses.
 *
 * Sessions are refresh families (`refresh_families`). The guarantees, across every process on the
 * file:
 * - A refresh consumes its token and inserts the successor in one BEGIN IMMEDIATE transaction that
 *   first reads the token and its family: of any number of concurrent uses of one token, exactly
 *   one succeeds. Signing is asynchronous, so the new pair is signed before the transaction and
 *   thrown away if the transaction refuses it.
 * - A token used a second time revokes its family, in the same transaction that detected it.
 * - Revocation (logout, reuse, role change, erasure) is recorded on the family row, which every
 *   refresh and every uncached access-token verification reads. A successor inserted by a refresh
 *   that committed before the revocation is covered by it; a refresh that commits after it is
 *   refused. So after a reuse detection or a logout no token of the family works again.
 * - A store failure (database locked past the busy timeout, read-only, full) is thrown as the
 *   SQLite error and answered 503 SERVICE_UNAVAILABLE by the error handler; the transaction rolls
 *   back, so nothing is half done.
 */
import type { Database, Statement } from "bun:sqlite";
import type { Logger } from "pino";
import type { Clock } from "../../clock";
import type { Config } from "../../config";
import type { AuditLog } from "../../plugins/audit/log";
import type { CredentialVerifier } from "../../plugins/auth/credentials";
import type { Role } from "../../plugins/auth/principal";
import {
  generateRefreshToken,
  type SigningKey,
  sha256Hex,
  signAccessToken,
} from "../../plugins/auth/tokens";
import type { ResolvedClient } from "../../plugins/client-ip";
import type { IpBlockService } from "../../plugins/ip-block/service";
import { MINUTE_MS, type Policy } from "../../plugins/rate-limit/policies";
import type { LimiterStore } from "../../plugins/rate-limit/store";
import type { ApiKeyService } from "./api-keys";
import { checkEmail, emailLookupKey } from "./email";
import {
  createPasswordChecker,
  hashPassword,
  type PasswordHashing,
  verifyPassword,
} from "./passwords";

export interface RequestMeta {
  client: ResolvedClient;
  requestId: string | null;
  route: string;
}

export interface IssuedTokens {
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
  refreshExpiresIn: number;
}

export interface UserRecord {
  id: string;
  email: string;
  role: Role;
  createdAt: number;
}

export type RegisterOutcome =
  | { code: "CREATED"; user: UserRecord }
  | { code: "DUPLICATE"; email: string }
  | { code: "INVALID_EMAIL"; reason: "invisible_characters" | "not_an_address" }
  | { code: "WEAK_PASSWORD"; rule: string; message: string };

export type LoginOutcome =
  | { code: "OK"; user: UserRecord; tokens: IssuedTokens }
  | { code: "INVALID" }
  | { code: "LOCKED"; retryAfterSeconds: number };

export type RefreshOutcome =
  | { code: "OK"; tokens: IssuedTokens }
  | { code: "INVALID" }
  | { code: "REUSED" };

export interface AuthServiceOptions {
  sqlite: Database;
  config: Readonly<Config>;
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  limiter: LimiterStore;
  ipBlocks: IpBlockService;
  credentials: CredentialVerifier;
  /** Narrows or revokes a user's keys when the role changes. */
  apiKeys: ApiKeyService;
  signingKey: SigningKey;
  passwordHashing?: PasswordHashing;
  /**
   * Hash the dummy password for unknown-email logins when the service is built (default), so the
   * first such login is not slower than the rest. Off for the CLI, which serves no logins.
   */
  prepareLogin?: boolean;
  /** Failed logins per account before it is locked, and over how long. */
  lockout?: { failures: number; windowMs: number };
}

interface UserRow extends UserRecord {
  passwordHash: string;
}

interface RefreshRow {
  id: string;
  userId: string;
  familyId: string;
  expiresAt: number;
  usedAt: number | null;
  revokedAt: number | null;
  /** The family's revocation; null also when the family has no row (refused as well). */
  familyRevokedAt: number | null;
  familyKnown: number;
}

/** A signed pair not yet stored: stored only if the transaction that consumes the parent agrees. */
interface PreparedTokens extends IssuedTokens {
  refreshHash: string;
  /** When the last of the pair expires, in ms: how long the family row must be kept. */
  lastExpiry: number;
}

const USER_COLUMNS = "id, email, role, password_hash AS passwordHash, created_at AS createdAt";

/** The limiter key for one account: every spelling of an address shares it. */
export function accountLimitKey(rawEmail: string): string {
  return `account:${sha256Hex(emailLookupKey(rawEmail))}`;
}

export class AuthService {
  /** Built on first registration: zxcvbn's dictionaries take ~100 ms to load. */
  private passwordChecker: ReturnType<typeof createPasswordChecker> | null = null;
  private readonly lockoutPolicy: Policy;
  /** What unknown-email logins verify against; hashed when the service is built. */
  private dummyHash: Promise<string> | null = null;
  private dummyHashReady = false;
  private readonly userByEmail: Statement<UserRow, [string]>;
  private readonly userById: Statement<UserRow, [string]>;
  private readonly refreshByHash: Statement<RefreshRow, [string]>;

  constructor(private readonly options: AuthServiceOptions) {
    const { sqlite } = options;
    const lockout = options.lockout ?? { failures: 10, windowMs: 15 * MINUTE_MS };
    this.lockoutPolicy = {
      id: "lockout",
      limit: lockout.failures,
      windowMs: lockout.windowMs,
      burstLimit: lockout.failures,
      failClosed: true,
    };
    this.userByEmail = sqlite.prepare(`SELECT ${USER_COLUMNS} FROM users WHERE email_key = ?`);
    this.userById = sqlite.prepare(`SELECT ${USER_COLUMNS} FROM users WHERE id = ?`);
    this.refreshByHash = sqlite.prepare(
      `SELECT t.id, t.user_id AS userId, t.family_id AS familyId, t.expires_at AS expiresAt,
              t.used_at AS usedAt, t.revoked_at AS revokedAt, f.revoked_at AS familyRevokedAt,
              f.id IS NOT NULL AS familyKnown
       FROM refresh_tokens t LEFT JOIN refresh_families f ON f.id = t.family_id
       WHERE t.token_hash = ?`,
    );
    // Made now, not at the first unknown-email login, so that login is not the slow one.
    if (options.prepareLogin !== false) void this.dummy();
    this.reconcileEmailKeys();
  }

  /** Whether the dummy hash for unknown-email logins exists yet (it is started at construction). */
  get loginPrepared(): boolean {
    return this.dummyHashReady;
  }

  /** Resolves once the dummy hash exists. */
  async prepared(): Promise<void> {
    await this.dummy();
  }

  private dummy(): Promise<string> {
    this.dummyHash ??= hashPassword(generateRefreshToken(), this.options.passwordHashing).then(
      (hash) => {
        this.dummyHashReady = true;
        return hash;
      },
    );
    return this.dummyHash;
  }

  /**
   * Rows stored before addresses were normalised have no `email_key`. Each gets its normalised
   * address and key now, oldest first; a row whose address is invalid under today's rules, or
   * collapses onto an address another account already holds, is set aside (key left null: it can
   * no longer sign in by email) and reported on every start until an operator resolves it. Runs in
   * one immediate transaction, so processes starting together do it once.
   */
  private reconcileEmailKeys(): void {
    const { sqlite, logger } = this.options;
    const setAside: string[] = [];
    sqlite
      .transaction(() => {
        const rows = sqlite
          .query<{ id: string; email: string }, []>(
            "SELECT id, email FROM users WHERE email_key IS NULL ORDER BY created_at, id",
          )
          .all();
        const taken = sqlite.query<{ id: string }, [string]>(
          "SELECT id FROM users WHERE email_key = ?",
        );
        for (const row of rows) {
          const verdict = checkEmail(row.email);
          if (!verdict.ok || taken.get(verdict.key)) {
            setAside.push(row.id);
            continue;
          }
          sqlite.run("UPDATE users SET email = ?, email_key = ? WHERE id = ?", [
            verdict.email,
            verdict.key,
            row.id,
          ]);
        }
      })
      .immediate();
    if (setAside.length > 0) {
      logger.warn(
        { users: setAside },
        "accounts stored before email normalisation collide with another account or are not valid addresses; they cannot sign in by email until resolved",
      );
    }
  }
  findUser(id: string): UserRecord | null {
    const row = this.userById.get(id);
    return row ? publicUser(row) : null;
  }

  /** Any spelling of the address finds the account (see email.ts). */
  findUserByEmail(email: string): UserRecord | null {
    const row = this.userByEmail.get(emailLookupKey(email));
    return row ? publicUser(row) : null;
  }

  async register(
    rawEmail: string,
    password: string,
    meta: RequestMeta | null,
    role: Role = "user",
  ): Promise<RegisterOutcome> {
    const address = checkEmail(rawEmail);
    if (!address.ok) return { code: "INVALID_EMAIL", reason: address.reason };
    const { email, key } = address;
    this.passwordChecker ??= createPasswordChecker(this.options.config.passwordPolicy);
    const verdict = this.passwordChecker(password, email);
    if (!verdict.ok) return { code: "WEAK_PASSWORD", rule: verdict.rule, message: verdict.message };
    // Hashed even for a duplicate, so a new and an existing email take the same time.
    const passwordHash = await hashPassword(password, this.options.passwordHashing);
    if (this.userByEmail.get(key)) {
      this.options.audit.record({
        type: "auth.register.duplicate",
        outcome: "failure",
        ip: meta?.client.ip ?? null,
        route: meta?.route ?? null,
        requestId: meta?.requestId ?? null,
      });
      return { code: "DUPLICATE", email };
    }
    const now = this.options.clock.now();
    const id = Bun.randomUUIDv7();
    try {
      this.options.sqlite.run(
        `INSERT INTO users (id, email, email_key, password_hash, role, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
        [id, email, key, passwordHash, role, now, now],
      );
    } catch (error) {
      // Two registrations raced past the lookup; the unique index decided.
      if (String(error).includes("UNIQUE")) return { code: "DUPLICATE", email };
      throw error;
    }
    this.options.audit.record({
      type: "auth.register.succeeded",
      outcome: "success",
      actor: `user:${id}`,
      ip: meta?.client.ip ?? null,
      route: meta?.route ?? null,
      requestId: meta?.requestId ?? null,
      detail: { role },
    });
    return { code: "CREATED", user: { id, email, role, createdAt: now } };
  }

  async login(rawEmail: string, password: string, meta: RequestMeta): Promise<LoginOutcome> {
    const { audit, clock, limiter } = this.options;
    const accountKey = accountLimitKey(rawEmail);
    const now = clock.now();

    const failures = await limiter.peek(this.lockoutPolicy, accountKey, now);
    if (failures >= this.lockoutPolicy.limit) {
      audit.record({
        type: "auth.login.locked",
        outcome: "denied",
        ip: meta.client.ip,
        route: meta.route,
        requestId: meta.requestId,
      });
      return { code: "LOCKED", retryAfterSeconds: Math.ceil(this.lockoutPolicy.windowMs / 1000) };
    }

    const user = this.userByEmail.get(emailLookupKey(rawEmail));
    // A password with a lone surrogate was never accepted at registration: it matches nothing,
    // rather than being collapsed to U+FFFD on its way to argon2 and matching some other password.
    const usable = password.isWellFormed();
    // The same argon2 work whether or not the account exists, so timing tells nothing.
    const matches = await verifyPassword(
      usable ? password : "",
      user?.passwordHash ?? (await this.dummy()),
    );
    const valid = user !== null && user !== undefined && usable && matches;

    if (!user || !valid) {
      await limiter.check([{ policy: this.lockoutPolicy, key: accountKey, now }]);
      audit.record({
        type: "auth.login.failed",
        outcome: "failure",
        actor: user ? `user:${user.id}` : null,
        ip: meta.client.ip,
        route: meta.route,
        requestId: meta.requestId,
        detail: { reason: user ? "bad_password" : "unknown_account" },
      });
      await this.options.ipBlocks.recordViolation("login", meta.client, meta.requestId);
      return { code: "INVALID" };
    }

    const familyId = Bun.randomUUIDv7();
    const tokens = await this.prepareTokens(user.id, user.role, familyId, now);
    this.options.sqlite
      .transaction(() => {
        this.options.sqlite.run(
          `INSERT INTO refresh_families (id, user_id, created_at, expires_at)
           VALUES (?, ?, ?, ?)`,
          [familyId, user.id, now, tokens.lastExpiry],
        );
        this.storeRefreshToken(user.id, familyId, tokens, now);
      })
      .immediate();
    audit.record({
      type: "auth.login.succeeded",
      outcome: "success",
      actor: `user:${user.id}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
    });
    return { code: "OK", user: publicUser(user), tokens: publicTokens(tokens) };
  }

  async refresh(token: string, meta: RequestMeta): Promise<RefreshOutcome> {
    const { sqlite, clock, audit } = this.options;
    const now = clock.now();
    const hash = sha256Hex(token);
    // A first look outside the transaction, so an unknown token costs no signature.
    const seen = this.refreshByHash.get(hash);
    if (!seen || !usable(seen, now)) return { code: "INVALID" };
    const user = this.userById.get(seen.userId);
    if (!user) return { code: "INVALID" };
    const tokens = await this.prepareTokens(user.id, user.role, seen.familyId, now);

    // The decision, made again inside one write transaction: everything above may be stale.
    const decision = sqlite
      .transaction((): "OK" | "INVALID" | "REUSED" => {
        const row = this.refreshByHash.get(hash);
        if (!row || !usable(row, now)) return "INVALID";
        if (row.usedAt !== null) {
          // A second use of one token is theft or a replay: the whole family ends, now.
          this.revokeFamilyRows(row.familyId, now);
          return "REUSED";
        }
        // The role is in the access token: a change since it was signed refuses it (and the
        // change revoked the family anyway).
        if (this.userById.get(row.userId)?.role !== user.role) return "INVALID";
        sqlite.run("UPDATE refresh_tokens SET used_at = ? WHERE id = ?", [now, row.id]);
        sqlite.run("UPDATE refresh_families SET expires_at = max(expires_at, ?) WHERE id = ?", [
          tokens.lastExpiry,
          row.familyId,
        ]);
        this.storeRefreshToken(row.userId, row.familyId, tokens, now);
        return "OK";
      })
      .immediate();

    if (decision === "INVALID") return { code: "INVALID" };
    if (decision === "REUSED") {
      this.options.credentials.applyRevocations();
      audit.record({
        type: "auth.refresh.reused",
        outcome: "denied",
        actor: `user:${seen.userId}`,
        ip: meta.client.ip,
        route: meta.route,
        requestId: meta.requestId,
        detail: { family: seen.familyId },
      });
      return { code: "REUSED" };
    }
    audit.record({
      type: "auth.refresh.succeeded",
      outcome: "success",
      actor: `user:${user.id}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
    });
    return { code: "OK", tokens: publicTokens(tokens) };
  }

  logout(userId: string, familyId: string, meta: RequestMeta): void {
    this.revokeFamily(familyId);
    this.options.audit.record({
      type: "auth.logout",
      outcome: "success",
      actor: `user:${userId}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
    });
  }

  /** Ends a refresh family and, within a second everywhere, its access tokens. */
  revokeFamily(familyId: string): void {
    const now = this.options.clock.now();
    this.options.sqlite.transaction(() => this.revokeFamilyRows(familyId, now)).immediate();
    this.options.credentials.applyRevocations();
  }

  /**
   * Deletes refresh tokens that can no longer be used (expired, or revoked longer ago than any
   * access token lives) and revocation rows no process needs any more. Bounded per call.
   */
  pruneSessions(now: number): number {
    const { sqlite, config } = this.options;
    const accessTtlMs = config.jwt.accessTokenExpireMinutes * 60_000;
    const tokens = sqlite.run(
      `DELETE FROM refresh_tokens WHERE rowid IN (SELECT rowid FROM refresh_tokens
         WHERE expires_at < ?1 OR revoked_at < ?1 - ?2 LIMIT 1000)`,
      [now, accessTtlMs],
    ).changes;
    // A family row goes only once no token of it can be valid, revoked or not: a token whose
    // family has no row is refused, so this never revives anything.
    const families = sqlite.run(
      `DELETE FROM refresh_families WHERE rowid IN (SELECT rowid FROM refresh_families
         WHERE expires_at < ? LIMIT 1000)`,
      [now - FAMILY_GRACE_MS],
    ).changes;
    const revocations = sqlite.run(
      `DELETE FROM auth_revocations WHERE rowid IN (SELECT rowid FROM auth_revocations
         WHERE created_at < ? LIMIT 1000)`,
      [now - accessTtlMs - 60 * 60_000],
    ).changes;
    return tokens + families + revocations;
  }

  /**
   * Ends every session of a user (role change, erasure), and drops every process's cached copies of
   * the user's keys, so their next use is checked against the account as it now is.
   */
  revokeUserSessions(userId: string): void {
    const { sqlite, clock, credentials } = this.options;
    const now = clock.now();
    sqlite
      .transaction(() => {
        const families = sqlite
          .query<{ id: string }, [string]>(
            "SELECT id FROM refresh_families WHERE user_id = ? AND revoked_at IS NULL",
          )
          .all(userId);
        for (const { id } of families) this.revokeFamilyRows(id, now);
      })
      .immediate();
    credentials.revoke("user", userId);
  }

  setRole(userId: string, role: Role, actor: string | null): boolean {
    const { sqlite } = this.options;
    return sqlite
      .transaction(() => {
        const changed = sqlite.run(
          "UPDATE users SET role = ?, updated_at = ? WHERE id = ? AND role != ?",
          [role, this.options.clock.now(), userId, role],
        ).changes;
        if (changed === 0) return false;
        this.options.audit.record({
          type: "admin.user.role_changed",
          outcome: "success",
          actor,
          detail: { user: userId, role },
        });
        // The user's keys may hold no more than the new role allows (narrowed or revoked, audited).
        this.options.apiKeys.boundToRole(userId, role, actor);
        // Tokens carry the role, and caches hold the keys: neither may outlive the change.
        this.revokeUserSessions(userId);
        return true;
      })
      .immediate();
  }

  /** Marks a family revoked, its tokens too, and tells every process. Call inside a transaction. */
  private revokeFamilyRows(familyId: string, now: number): void {
    const { sqlite, credentials } = this.options;
    sqlite.run("UPDATE refresh_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [
      now,
      familyId,
    ]);
    sqlite.run(
      "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
      [now, familyId],
    );
    credentials.recordRevocation("family", familyId);
  }

  /** Signs an access token and draws a refresh token; nothing is stored yet. */
  private async prepareTokens(
    userId: string,
    role: Role,
    familyId: string,
    now: number,
  ): Promise<PreparedTokens> {
    const { config } = this.options;
    const accessTtl = config.jwt.accessTokenExpireMinutes * 60;
    const refreshTtl = config.jwt.refreshTokenExpireDays * 24 * 60 * 60;
    const accessToken = await signAccessToken(
      this.options.signingKey,
      { sub: userId, role, fam: familyId },
      now,
      accessTtl,
    );
    const refreshToken = generateRefreshToken();
    return {
      accessToken,
      refreshToken,
      expiresIn: accessTtl,
      refreshExpiresIn: refreshTtl,
      refreshHash: sha256Hex(refreshToken),
      lastExpiry: now + Math.max(accessTtl, refreshTtl) * 1000,
    };
  }

  private storeRefreshToken(
    userId: string,
    familyId: string,
    tokens: PreparedTokens,
    now: number,
  ): void {
    this.options.sqlite.run(
      `INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
      [
        Bun.randomUUIDv7(),
        userId,
        familyId,
        tokens.refreshHash,
        now,
        now + tokens.refreshExpiresIn * 1000,
      ],
    );
  }
}

/** Clock skew allowed on access tokens, and then some: how long a family outlives its tokens. */
const FAMILY_GRACE_MS = 60_000;

/** Whether a refresh token may be presented at all: known, its family live, not expired. */
function usable(row: RefreshRow, now: number): boolean {
  return (
    row.familyKnown === 1 &&
    row.familyRevokedAt === null &&
    row.revokedAt === null &&
    row.expiresAt > now
  );
}

function publicTokens(tokens: PreparedTokens): IssuedTokens {
  const { accessToken, refreshToken, expiresIn, refreshExpiresIn } = tokens;
  return { accessToken, refreshToken, expiresIn, refreshExpiresIn };
}

function publicUser(row: UserRow): UserRecord {
  return { id: row.id, email: row.email, role: row.role, createdAt: row.createdAt };
}
