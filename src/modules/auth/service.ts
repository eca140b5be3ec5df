/**
 * @module
 * Accounts and sessions: register, login (constant work whether the account exists), refresh with
 * rotation and reuse detection, logout, and the operator's user commands. Outcomes are values; the
 * routes turn them into responses.
 */
import type { Database, Statement } from "bun:sqlite";
import type { Logger } from "pino";
import type { Clock } from "../../clock";
import type { Config } from "../../config";
import type { AuditLog } from "../../plugins/audit/log";
import type { ResolvedClient } from "../../plugins/client-ip";
import type { IpBlockService } from "../../plugins/ip-block/service";
import { MINUTE_MS, type Policy } from "../../plugins/rate-limit/policies";
import type { LimiterStore } from "../../plugins/rate-limit/store";
import type { ApiKeyService } from "./api-keys";
import type { CredentialVerifier } from "./credentials";
import { checkEmail, emailLookupKey } from "./email";
import {
  createPasswordChecker,
  hashPassword,
  type PasswordHashing,
  verifyPassword,
} from "./passwords";
import type { Role } from "./principal";
import { generateRefreshToken, type SigningKey, sha256Hex, signAccessToken } from "./tokens";

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
      `SELECT id, user_id AS userId, family_id AS familyId, expires_at AS expiresAt,
              used_at AS usedAt, revoked_at AS revokedAt
       FROM refresh_tokens WHERE token_hash = ?`,
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

    const tokens = await this.issueTokens(user.id, user.role, Bun.randomUUIDv7(), now);
    audit.record({
      type: "auth.login.succeeded",
      outcome: "success",
      actor: `user:${user.id}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
    });
    return { code: "OK", user: publicUser(user), tokens };
  }

  async refresh(token: string, meta: RequestMeta): Promise<RefreshOutcome> {
    const { sqlite, clock, audit } = this.options;
    const now = clock.now();
    const row = this.refreshByHash.get(sha256Hex(token));
    if (!row || row.revokedAt !== null || row.expiresAt <= now) return { code: "INVALID" };
    // Mark it used only if nobody did first: a second use of one token is theft or a replay.
    const claimed = sqlite.run(
      "UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL",
      [now, row.id],
    ).changes;
    if (claimed === 0) {
      this.revokeFamily(row.familyId);
      audit.record({
        type: "auth.refresh.reused",
        outcome: "denied",
        actor: `user:${row.userId}`,
        ip: meta.client.ip,
        route: meta.route,
        requestId: meta.requestId,
        detail: { family: row.familyId },
      });
      return { code: "REUSED" };
    }
    const user = this.userById.get(row.userId);
    if (!user) return { code: "INVALID" };
    const tokens = await this.issueTokens(user.id, user.role, row.familyId, now);
    audit.record({
      type: "auth.refresh.succeeded",
      outcome: "success",
      actor: `user:${user.id}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
    });
    return { code: "OK", tokens };
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
    this.options.sqlite.run(
      "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
      [this.options.clock.now(), familyId],
    );
    this.options.credentials.revoke("family", familyId);
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
    const revocations = sqlite.run(
      `DELETE FROM auth_revocations WHERE rowid IN (SELECT rowid FROM auth_revocations
         WHERE created_at < ? LIMIT 1000)`,
      [now - accessTtlMs - 60 * 60_000],
    ).changes;
    return tokens + revocations;
  }

  /**
   * Ends every session of a user (role change, erasure), and drops every process's cached copies of
   * the user's keys, so their next use is checked against the account as it now is.
   */
  revokeUserSessions(userId: string): void {
    const families = this.options.sqlite
      .query<{ familyId: string }, [string]>(
        "SELECT DISTINCT family_id AS familyId FROM refresh_tokens WHERE user_id = ? AND revoked_at IS NULL",
      )
      .all(userId);
    for (const { familyId } of families) this.revokeFamily(familyId);
    this.options.credentials.revoke("user", userId);
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

  private async issueTokens(
    userId: string,
    role: Role,
    familyId: string,
    now: number,
  ): Promise<IssuedTokens> {
    const { config, sqlite } = this.options;
    const accessTtl = config.jwt.accessTokenExpireMinutes * 60;
    const refreshTtl = config.jwt.refreshTokenExpireDays * 24 * 60 * 60;
    const accessToken = await signAccessToken(
      this.options.signingKey,
      { sub: userId, role, fam: familyId },
      now,
      accessTtl,
    );
    const refreshToken = generateRefreshToken();
    sqlite.run(
      `INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
      [Bun.randomUUIDv7(), userId, familyId, sha256Hex(refreshToken), now, now + refreshTtl * 1000],
    );
    return { accessToken, refreshToken, expiresIn: accessTtl, refreshExpiresIn: refreshTtl };
  }
}

function publicUser(row: UserRow): UserRecord {
  return { id: row.id, email: row.email, role: row.role, createdAt: row.createdAt };
}
