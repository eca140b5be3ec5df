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
 *   one consumes it and stores a successor (the others are repeats, below, or refused). Signing is asynchronous, so the new pair is signed before the transaction and
 *   thrown away if the transaction refuses it.
 * - A token used a second time revokes its family, in the same transaction that detected it —
 *   unless it comes again within REPEAT_GRACE_MS of its first use and the successor that use
 *   stored is still unused: then it is a repeat (a client retrying a refresh whose answer it lost,
 *   two tabs refreshing at once), answered with that same successor (./refresh-successor.ts) and a
 *   new access token. A token two rotations behind, or repeated later, is reuse as before.
 * - Revocation (logout, reuse, role change, erasure) is recorded on the family row, which every
 *   refresh and every uncached access-token verification reads. A successor inserted by a refresh
 *   that committed before the revocation is covered by it; a refresh that commits after it is
 *   refused. So after a reuse detection or a logout no token of the family works again.
 * - A store failure (database locked past the busy timeout, read-only, full) is thrown as the
 *   SQLite error and answered 503 SERVICE_UNAVAILABLE by the error handler; the transaction rolls
 *   back, so nothing is half done.
 */
import type { Database } from "bun:sqlite";
import {
  and,
  asc,
  desc,
  eq,
  gt,
  inArray,
  isNull,
  lt,
  ne,
  notExists,
  or,
  type SQL,
  type SQLWrapper,
  sql,
} from "drizzle-orm";
import type { Clock } from "../../clock";
import type { Config } from "../../config";
import { sqliteCodeOf } from "../../db/busy";
import { type AppDatabase, drizzleOf } from "../../db/client";
import { preparedOnUse } from "../../db/prepared-on-use";
import { sealMatches } from "../../db/row-seal";
import { authRevocations, refreshFamilies, refreshTokens, users } from "../../db/schema";
import { AppError } from "../../errors";
import { type Logger, storedText } from "../../logging/logger";
import type { AuditLog } from "../../plugins/audit/log";
import type { CredentialVerifier } from "../../plugins/auth/credentials";
import type { Role } from "../../plugins/auth/principal";
import type { CredentialSeal } from "../../plugins/auth/seal";
import { sealedFamilyColumns } from "../../plugins/auth/sealed-columns";
import {
  generateRefreshToken,
  type SigningKey,
  sha256Hex,
  signAccessToken,
} from "../../plugins/auth/tokens";
import type { ResolvedClient } from "../../plugins/client-ip";
import type { IpBlockService } from "../../plugins/ip-block/service";
import { limiterFailed } from "../../plugins/rate-limit/enforce";
import { refusedForSeconds } from "../../plugins/rate-limit/headers";
import {
  LOGIN_LOCKOUT_POLICY_LABEL,
  type RateLimitMetrics,
} from "../../plugins/rate-limit/metrics";
import { MINUTE_MS, type Policy } from "../../plugins/rate-limit/policies";
import type { LimiterStore } from "../../plugins/rate-limit/store";
import { RecentEntries } from "../../recent-entries";
import type { ApiKeyService } from "./api-keys";
import { checkEmail, emailLookupKey, foldCase } from "./email";
import {
  addressKeyOf,
  normaliseUnkeyedRows,
  refoldEmailKeys,
  unfoldedKeysFoldingTo,
  unkeyedClaimedKeys,
  unkeyedRowsClaiming,
  unkeyedRowsMark,
} from "./email-keys";
import { mixesScripts } from "./mixed-scripts";
import type { PasswordWork } from "./password-work";
import {
  createPasswordChecker,
  hashPassword,
  type PasswordHashing,
  type PasswordStrengthModules,
  verifyPassword,
} from "./passwords";
import { idsOfOtherReadings, OTHER_READINGS_READ, readingOf, storedReading } from "./readings";
import { type ReadingsQuiet, ReadingsUpkeep } from "./readings-upkeep";
import { type RefreshSuccessor, unprefixedSuccessor } from "./refresh-successor";

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
  | { code: "INVALID_EMAIL"; reason: "invisible_characters" | "not_an_address" | "mixed_scripts" }
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
  /** How long readings of another version must stay unchanged before they are written again. */
  readingsQuiet?: ReadingsQuiet;
  /** Where sign-ins and registrations hash, bounded (./password-work.ts); unbounded if absent. */
  passwordWork?: PasswordWork;
  /**
   * Hash the dummy password for unknown-email logins when the service is built (default), so the
   * first such login is not slower than the rest. Off for the CLI, which serves no logins.
   */
  prepareLogin?: boolean;
  /** Registrations wait until the start has looked at the readings (./feature.ts). */
  registrationsAfterReadings?: boolean;
  /** Failed logins per account before it is locked, and over how long. */
  lockout?: { failures: number; windowMs: number };
  /** How zxcvbn is loaded at the first registration (passwords.ts; tests make it fail). */
  loadPasswordStrength?: () => Promise<PasswordStrengthModules>;
  /** Where a lockout call the limiter store failed is counted (`rate_limit_store_errors_total`). */
  rateLimitMetrics: RateLimitMetrics;
  /** Accounts, sessions and refresh tokens are written with their seal and trusted only with it. */
  seal: CredentialSeal;
  /** Each refresh token's successor (./refresh-successor.ts), keyed from AUDIT_SECRET_KEY. */
  successorOf: RefreshSuccessor;
}

type UserRow = typeof users.$inferSelect;

/** The statements every login and refresh runs, prepared once per service. */
function prepareStatements(db: AppDatabase) {
  const userBy = (column: typeof users.id | typeof users.emailKey) =>
    db
      .select()
      .from(users)
      .where(eq(column, sql.placeholder("value")))
      .prepare();
  return preparedOnUse({
    userByEmail: () => userBy(users.emailKey),
    userById: () => userBy(users.id),
    /** The accounts whose address reads as one (./readings.ts): several only in an older file. */
    usersByReading: () =>
      db
        .select()
        .from(users)
        .where(eq(users.reading, sql.placeholder("value")))
        .prepare(),
    /** A refresh token by its hash, with its family's state (null family: no row, refused). */
    refreshByHash: () =>
      db
        .select({
          id: refreshTokens.id,
          userId: refreshTokens.userId,
          familyId: refreshTokens.familyId,
          tokenHash: refreshTokens.tokenHash,
          seal: refreshTokens.seal,
          expiresAt: refreshTokens.expiresAt,
          usedAt: refreshTokens.usedAt,
          revokedAt: refreshTokens.revokedAt,
          family: refreshFamilies.id,
          familyUserId: refreshFamilies.userId,
          familyRevokedAt: refreshFamilies.revokedAt,
          familySeal: refreshFamilies.seal,
        })
        .from(refreshTokens)
        .leftJoin(refreshFamilies, eq(refreshFamilies.id, refreshTokens.familyId))
        .where(eq(refreshTokens.tokenHash, sql.placeholder("hash")))
        .prepare(),
    /** A row of the family past its TOKENS_PER_FAMILY newest: the family is full (familyFull). */
    familyRowPastLimit: () =>
      db
        .select({ one: sql<number>`1` })
        .from(refreshTokens)
        .where(eq(refreshTokens.familyId, sql.placeholder("familyId")))
        .orderBy(desc(sql`rowid`))
        .limit(1)
        .offset(TOKENS_PER_FAMILY - 1)
        .prepare(),
  });
}

type RefreshRow = NonNullable<
  ReturnType<ReturnType<typeof prepareStatements>["refreshByHash"]["get"]>
>;

/** A successor's row, and the token in the spelling its hash was stored under. */
interface StoredSuccessor {
  row: RefreshRow;
  token: string;
}

/** A signed pair not yet stored: stored only if the transaction that consumes the parent agrees. */
interface PreparedTokens extends IssuedTokens {
  refreshHash: string;
  /** When the last of the pair expires, in ms: how long the family row must be kept. */
  lastExpiry: number;
}

/** The limiter key for one account: every spelling of an address shares it. */
export function accountLimitKey(rawEmail: string): string {
  return `account:${sha256Hex(emailLookupKey(rawEmail))}`;
}

/**
 * The accounts a start's warn line names: at most a hundred, each id cut as the seal reports cut
 * them (an id written into the file made a line of a million characters, probe 92a F5).
 */
function accountsNamed(ids: readonly unknown[]): { users: string[]; more?: number } {
  const named = ids
    .slice(0, 100)
    .map((id) => storedText(typeof id === "string" ? id : String(id), 64));
  return ids.length > 100 ? { users: named, more: ids.length - 100 } : { users: named };
}

/** An account as an operator command sees it (accountForOperator). */
export interface OperatorAccount {
  id: string;
  email: unknown;
  role: Role;
  intact: boolean;
  erased: boolean;
}

/**
 * A registration refused because a release that reads addresses otherwise took the file: its
 * look-alike check would miss that release's accounts. This process stops at its next check.
 */
export class ReadingsTaken extends AppError {
  constructor() {
    super(
      "SERVICE_UNAVAILABLE",
      "This process is stopping: another release took its database. Retry shortly.",
      undefined,
      { "retry-after": "5" },
    );
  }
}

/**
 * A registration refused while more accounts than it reads have readings of another version: the
 * maintenance writes them again (./readings-upkeep.ts), and a CLI command never does.
 */
export class ReadingsBeingWritten extends AppError {
  constructor() {
    super("SERVICE_UNAVAILABLE", "Accounts are being upgraded; retry shortly.", undefined, {
      "retry-after": "10",
    });
  }
}

/**
 * How long a registration waits for the start to look at the readings (100 ms after it listens,
 * again every second while another connection holds the lock) before answering 503.
 */
const START_LOOK_WAITED_MS = 3_000;

/** Addresses of rows stored before normalisation whose keys a process keeps (unkeyedKeys). */
const UNKEYED_KEYS_REMEMBERED = 1_000_000;

export class AuthService {
  /** Built on first registration, which is when zxcvbn is loaded (see passwords.ts). */
  private passwordChecker: ReturnType<typeof createPasswordChecker> | null = null;
  private readonly lockoutPolicy: Policy;
  /** What unknown-email logins verify against; hashed when the service is built. */
  private dummyHash: Promise<string> | null = null;
  private dummyHashReady = false;
  private readonly db: AppDatabase;
  private readonly statements: ReturnType<typeof prepareStatements>;
  /** The accounts' readings kept of this release's version (./readings-upkeep.ts). */
  private readonly readings: ReadingsUpkeep;
  private readonly passwordWork: PasswordWork;
  /** The used tokens of ended sessions whose presentation this process has audited (refresh). */
  private readonly reusedAfterEnd = new RecentEntries<true>(10_000);
  /**
   * The keys rows stored before normalisation claim, and the mark of those rows they were read
   * at: read again only when the rows change (only a start, an operator or the file changes them).
   * Read at every registration, 100,000 such rows waiting took 0.5 s of the event loop each (probe
   * 94a F3), and a memo of their addresses never hit past its bound (94e F2: 10 s a registration
   * with 260,000 rows that are no address).
   */
  private unkeyedClaims: { mark: string; keys: Set<string> } | null = null;
  /**
   * Each such row's key (or "" for none) by a hash of its address: the rows are read again after
   * any other connection's write, and their addresses are not checked again (94e F2). Dropped
   * whole past UNKEYED_KEYS_REMEMBERED.
   */
  private readonly unkeyedKeys = new Map<bigint, string>();
  /**
   * Sign-ins of this process whose failure is counted and whose verdict is not given yet, by
   * account key: each holds one of the lockout's places until its password is judged.
   */
  private readonly judging = new Map<string, Set<Promise<void>>>();

  constructor(private readonly options: AuthServiceOptions) {
    this.passwordWork = options.passwordWork ?? { run: (work) => work() };
    const lockout = options.lockout ?? { failures: 10, windowMs: 15 * MINUTE_MS };
    this.lockoutPolicy = {
      id: "lockout",
      limit: lockout.failures,
      windowMs: lockout.windowMs,
      burstLimit: lockout.failures,
      failClosed: true,
    };
    this.db = drizzleOf(options.sqlite);
    this.statements = prepareStatements(this.db);
    this.readings = new ReadingsUpkeep(options.sqlite, options.logger, options.readingsQuiet, {
      afterStart: options.registrationsAfterReadings,
    });
    // Made now, not at the first unknown-email login, so that login is not the slow one.
    if (options.prepareLogin !== false) void this.dummy();
    const refolded = refoldEmailKeys(this.db, options.seal);
    if (refolded.collides.length > 0) {
      options.logger.error(
        accountsNamed(refolded.collides),
        "accounts whose address folds again (capital ẞ) onto another account's: the account holding the address keeps it (of several folded once to one address, none takes it), and these cannot sign in by email until an operator resolves it (users:list marks them; name them with --id in users:role, users:erase)",
      );
    }
    if (refolded.heldByTampered.length > 0) {
      options.logger.error(
        { ...accountsNamed(refolded.heldByTampered), rows: refolded.blockedBy },
        "accounts whose address folds again (capital ẞ) are left as they are while an account row does not match its seal (written into the database file: it may hold, or have held, their address; `rows` names it, db:verify names every such row); they cannot sign in by email until that row is put right (restore the file from a backup) or removed; the next start folds them",
      );
    }
    this.reconcileEmailKeys();
    // Read at start, not by the first registration (probe 94g F3: 10 s of the event loop there).
    this.unkeyedRowClaims("");
  }

  /**
   * Writes the accounts' readings again where some are another version's, taking the file for
   * this release (./readings-upkeep.ts): once a start can no longer fail (`atStart`), and at each
   * maintenance tick. Never by a CLI command.
   */
  keepReadings(options: { atStart?: boolean } = {}): void {
    this.readings.keep(options);
  }

  /**
   * The start will not look at the readings (a stop was asked for first): registrations waiting
   * for that look answer 503 now rather than hold the stop for their wait (probe 96a F6).
   */
  readingsNotLookedAtStart(): void {
    this.readings.notLookedAtStart();
  }

  /** Resolves once the readings' rewrite under way, if any, has ended. */
  readingsSettled(): Promise<void> {
    return this.readings.settled();
  }

  private userById(id: string): UserRow | null {
    return this.sealed(this.statements.userById.get({ value: id }));
  }

  private userByEmail(emailKey: string): UserRow | null {
    return this.sealed(this.statements.userByEmail.get({ value: emailKey }));
  }

  /**
   * Makes an account's hash again from the NFKC spelling of the password it was just verified
   * with: hashed before passwords were normalised, it held the spelling typed (passwords.ts). Only
   * the row as read is changed, resealed; a failure leaves the old hash, which still verifies.
   */
  private async rehashPassword(user: UserRow, password: string): Promise<void> {
    try {
      const passwordHash = await this.passwordWork.run(() =>
        hashPassword(password, this.options.passwordHashing),
      );
      this.db.transaction(
        () => {
          const current = this.userById(user.id);
          if (!current || current.passwordHash !== user.passwordHash) return;
          const { id, email, emailKey, role } = current;
          this.db
            .update(users)
            .set({
              passwordHash,
              seal: this.options.seal.account({ id, email, emailKey, passwordHash, role }),
            })
            .where(eq(users.id, id))
            .run();
        },
        { behavior: "immediate" },
      );
    } catch (error) {
      this.options.logger.warn(
        { err: error, userId: user.id },
        "a password hash could not be made again in its normalised spelling; the old one still verifies",
      );
    }
  }

  /** The account, or null when there is none or its row does not match its seal. */
  private sealed(row: UserRow | undefined): UserRow | null {
    return row && this.options.seal.intact.account(row) ? row : null;
  }

  /** A refresh token's row, or null when it does not match its seal. */
  private sealedRefresh(row: RefreshRow | undefined): RefreshRow | null {
    if (!row) return null;
    const { seal } = this.options;
    if (!seal.intact.refreshToken(row)) return null;
    // No family row at all is refused by `usable`; one that is there must match its seal.
    const familyIntact =
      row.family === null ||
      seal.intact.family({
        id: row.family,
        userId: row.familyUserId ?? "",
        revokedAt: row.familyRevokedAt,
        seal: row.familySeal,
      });
    return familyIntact ? row : null;
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

  /** Whether a row stored before normalisation claims `key` (email-keys.ts `unkeyedClaimedKeys`). */
  private unkeyedRowClaims(key: string): boolean {
    const mark = unkeyedRowsMark(this.db);
    if (this.unkeyedClaims?.mark !== mark) {
      if (this.unkeyedKeys.size > UNKEYED_KEYS_REMEMBERED) this.unkeyedKeys.clear();
      const keyOf = (email: string): string | null => {
        const hash = BigInt(Bun.hash.wyhash(email));
        const known = this.unkeyedKeys.get(hash);
        if (known !== undefined) return known === "" ? null : known;
        const key = addressKeyOf(email);
        this.unkeyedKeys.set(hash, key ?? "");
        return key;
      };
      this.unkeyedClaims = { mark, keys: unkeyedClaimedKeys(this.db, keyOf) };
    }
    return this.unkeyedClaims.keys.has(key);
  }

  /** Rows stored before addresses were normalised, given their keys (email-keys.ts). */
  private reconcileEmailKeys(): void {
    const { logger, seal } = this.options;
    const { setAside, waiting, blockedBy } = normaliseUnkeyedRows(this.db, seal);
    if (setAside.length > 0) {
      logger.warn(
        accountsNamed(setAside),
        "accounts stored before email normalisation collide with another account or are not valid addresses; they cannot sign in by email until resolved: users:list marks them; name them with --id (users:role, users:erase)",
      );
    }
    if (waiting.length > 0) {
      logger.error(
        { ...accountsNamed(waiting), rows: [blockedBy] },
        "accounts stored before email normalisation are left unnormalised while an account row does not match its seal (written into the database file: it may hold, or have held, their address; `rows` names it, db:verify names every such row); they cannot sign in by email until that row is put right (restore the file from a backup) or removed; the next start normalises them",
      );
    }
  }

  findUser(id: string): UserRecord | null {
    const row = this.userById(id);
    return row ? publicUser(row) : null;
  }

  /** Any spelling of the address finds the account (see email.ts). */
  findUserByEmail(email: string): UserRecord | null {
    const row = this.userByEmail(emailLookupKey(email));
    return row ? publicUser(row) : null;
  }

  async register(
    rawEmail: string,
    password: string,
    meta: RequestMeta | null,
    role: Role = "user",
    {
      beforeWrite,
    }: {
      /**
       * Run inside the write transaction once the account is known to be new, just before it is
       * written: what the caller does only if an account is written (users:create marks the file,
       * cli/commands/users.ts). What it throws refuses the registration, nothing written.
       */
      beforeWrite?: () => void;
    } = {},
  ): Promise<RegisterOutcome> {
    const address = checkEmail(rawEmail);
    if (!address.ok) return { code: "INVALID_EMAIL", reason: address.reason };
    if (mixesScripts(address.email)) {
      return { code: "INVALID_EMAIL", reason: "mixed_scripts" };
    }
    const { email, key } = address;
    // One load however many registrations arrive while zxcvbn is still being imported. A load that
    // failed is not kept: the registrations waiting on it fail, and the next one loads again.
    this.passwordChecker ??= createPasswordChecker(
      this.options.config.passwordPolicy,
      this.options.loadPasswordStrength,
    ).catch((error: unknown) => {
      this.passwordChecker = null;
      throw error;
    });
    const verdict = (await this.passwordChecker)(password, email);
    if (!verdict.ok) return { code: "WEAK_PASSWORD", rule: verdict.rule, message: verdict.message };
    // Hashed even for a duplicate, so a new and an existing email take the same time.
    const passwordHash = await this.passwordWork.run(() =>
      hashPassword(password, this.options.passwordHashing),
    );
    const reading = storedReading(email);
    // In the tenth of a second after a start listens, the start has not yet looked at the
    // readings (./readings-upkeep.ts): wait for it, up to a bound, rather than refuse.
    await this.readings.untilLookedAtStart(START_LOOK_WAITED_MS);
    // Rows stored before normalisation that a start leaves aside while another claims the address
    // too hold it (probe 93g F2: none of them takes it, and neither may a newcomer). Read before
    // the write transaction (93h F3: inside it, 100,000 such rows held the lock 0.5 s a
    // registration): no request changes them; a start, an operator or a restore does, which the
    // rows' mark tells (unkeyedRowClaims).
    const heldUnkeyed = this.unkeyedRowClaims(key);
    const duplicate = () => {
      // An address that reads as an account's (`рау` in Cyrillic beside `pay`, either registered
      // first) is taken, answered as the same address is (probe 90b F2). The reading is the one
      // of the account's sealed address, not the column's: moved in the file, a reading took any
      // free address (probe 91a F4).
      const readsAsThis = (account: UserRow | null) =>
        account !== null && readingOf(account.email) === reading;
      // And an account whose reading is another version's, read here (probe 94g F1); more than
      // a few are being written again (95a F1: the rest were not read, and look-alikes registered).
      const others = idsOfOtherReadings(this.options.sqlite, OTHER_READINGS_READ + 1);
      if (others.length > OTHER_READINGS_READ || this.readings.registrationsWait()) {
        throw new ReadingsBeingWritten();
      }
      const taken =
        this.statements.usersByReading
          .all({ value: reading })
          .some((row) => readsAsThis(this.sealed(row))) ||
        others.some((other) => readsAsThis(this.userById(other)));
      // A key an earlier release folded once (`straße` for `STRAẞE`) that folds to this one holds
      // the address too, whether or not its row matches its seal, as the unique index holds a
      // key: a start folds it once the row is put right, and an account registered meanwhile
      // took the address from it for good (probe 92e F1).
      const same =
        this.userByEmail(key) !== null ||
        unfoldedKeysFoldingTo(this.db, key).length > 0 ||
        heldUnkeyed;
      if (!taken && !same) return false;
      this.options.audit.record({
        type: "auth.register.duplicate",
        outcome: "failure",
        ip: meta?.client.ip ?? null,
        route: meta?.route ?? null,
        requestId: meta?.requestId ?? null,
        detail: same ? undefined : { lookAlike: true },
      });
      return true;
    };
    const now = this.options.clock.now();
    const id = Bun.randomUUIDv7();
    try {
      // The account and its audit event commit together: a copy or a crash never has one alone.
      // The look-up is in the same immediate transaction: two look-alikes registered at once, in
      // one process or several, are one account (the unique index decides only the same key).
      const created = this.db.transaction(
        () => {
          // Another release took the file: its readings are not the ones looked up here, and
          // this process stops at its next check (db/readings-mark.ts; probe 94g F1).
          if (!this.readings.stillOurs()) throw new ReadingsTaken();
          if (duplicate()) return false;
          beforeWrite?.();
          this.db
            .insert(users)
            .values({
              id,
              email,
              emailKey: key,
              reading,
              passwordHash,
              role,
              seal: this.options.seal.account({ id, email, emailKey: key, passwordHash, role }),
              createdAt: new Date(now),
              updatedAt: new Date(now),
            })
            .run();
          this.options.audit.record({
            type: "auth.register.succeeded",
            outcome: "success",
            actor: `user:${id}`,
            ip: meta?.client.ip ?? null,
            route: meta?.route ?? null,
            requestId: meta?.requestId ?? null,
            detail: { role },
          });
          return true;
        },
        { behavior: "immediate" },
      );
      if (!created) return { code: "DUPLICATE", email };
    } catch (error) {
      // A row written into the file with this key, which the look-up does not trust (no seal).
      if (sqliteCodeOf(error) === "SQLITE_CONSTRAINT_UNIQUE") return { code: "DUPLICATE", email };
      throw error;
    }
    return { code: "CREATED", user: { id, email, role, createdAt: now } };
  }

  /**
   * The lockout fails closed, as the rate-limit stage does for such a policy: a store that cannot
   * answer (locked, unreachable, a broken row) refuses the login with 503 and Retry-After, never a
   * verdict on the password that went uncounted.
   */
  private async lockoutCall<T>(meta: RequestMeta, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      const { rateLimitMetrics: metrics, logger } = this.options;
      const requestId = meta.requestId;
      throw limiterFailed(error, {
        metrics,
        logger,
        requestId,
        failClosed: true,
        policy: "lockout",
      });
    }
  }

  /**
   * The failure is counted before the password is judged, and given back when it was right: one
   * atomic grant in the limiter store decides whether a login gets a verdict, so logins side by
   * side, in this process or in others on the same file or Redis, never get more verdicts than
   * the lockout allows. Read first and counted after the password check, each process gave a
   * verdict every time a lock lifted (probe 24c F1), and the read and the count could round apart
   * (F3). Keyed by every spelling of the address, known or not, so the lock says nothing about
   * whether the account exists.
   */
  async login(rawEmail: string, password: string, meta: RequestMeta): Promise<LoginOutcome> {
    const { audit, clock, limiter } = this.options;
    const now = clock.now();
    const policy = this.lockoutPolicy;
    const key = accountLimitKey(rawEmail);

    let [failure] = await this.lockoutCall(meta, () => limiter.check([{ policy, key, now }]));
    // Refused while this process still judges other sign-ins to the account: the last places may
    // be theirs, and one with the right password gives its place back within ~70 ms. Told the
    // lock's wait and audited as locked, the owner's second device waited six minutes for a lock
    // that never was (probe 58a F5). Asked again as each round of them ends (a place given back
    // goes to one of those waiting), at most as many rounds as the lockout has places.
    for (let round = 0; !failure!.admitted && round < policy.limit; round++) {
      const pending = this.judging.get(key);
      if (pending === undefined) break;
      await Promise.all(pending);
      const again = clock.now();
      [failure] = await this.lockoutCall(meta, () => limiter.check([{ policy, key, now: again }]));
    }
    if (!failure!.admitted) {
      // A 429 RATE_LIMITED like the rate-limit stage's: counted with them (the dashboard's panel
      // and PalisadeRateLimitSpike), as well as in auth_failures_total{reason="locked"}.
      this.options.rateLimitMetrics.rejections.labels(LOGIN_LOCKOUT_POLICY_LABEL).inc();
      audit.record({
        type: "auth.login.locked",
        outcome: "denied",
        ip: meta.client.ip,
        route: meta.route,
        requestId: meta.requestId,
      });
      return { code: "LOCKED", retryAfterSeconds: refusedForSeconds(policy, failure!, now) };
    }
    const giveBack = () =>
      limiter.giveBack([
        {
          policy,
          key,
          windowStart: failure!.windowStart,
          burstWindowStart: failure!.burstWindowStart,
          count: 1,
        },
      ]);

    let judged!: () => void;
    const verdict = new Promise<void>((resolve) => {
      judged = resolve;
    });
    const judgingNow = this.judging.get(key) ?? new Set<Promise<void>>();
    judgingNow.add(verdict);
    this.judging.set(key, judgingNow);
    const verdictGiven = () => {
      judgingNow.delete(verdict);
      if (judgingNow.size === 0 && this.judging.get(key) === judgingNow) this.judging.delete(key);
      judged();
    };

    let user: UserRow | null;
    let valid: boolean;
    try {
      // Every login waits for the dummy hash, not only an unknown email's: one that arrives while
      // it is still being made (the first moments after a start) must not tell the two apart by
      // its wait.
      const dummyHash = await this.dummy();
      user = this.userByEmail(emailLookupKey(rawEmail));
      // A password with a lone surrogate was never accepted at registration: it matches nothing,
      // rather than being collapsed to U+FFFD on its way to argon2 and matching some other password.
      const usable = password.isWellFormed();
      // The same argon2 work whether or not the account exists, so timing tells nothing.
      const verified = await this.passwordWork.run(() =>
        verifyPassword(usable ? password : "", user?.passwordHash ?? dummyHash),
      );
      valid = user !== null && usable && verified.matches;
      if (valid && verified.legacy) await this.rehashPassword(user!, password);
    } catch (error) {
      // No verdict was given (the client gets a 500 or 503): nothing to count.
      giveBack();
      verdictGiven();
      throw error;
    }

    if (!user || !valid) {
      verdictGiven();
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
    giveBack();
    verdictGiven();

    // Signing is async and the transaction is not: the account is read again inside it, since it
    // may have been erased (the session would name no user) or given another role (the tokens
    // would carry the old one) while the password was checked and the tokens signed.
    const familyId = Bun.randomUUIDv7();
    let role = user.role;
    let tokens = await this.prepareTokens(user.id, role, familyId, now);
    let sessionsEnded = 0;
    for (;;) {
      const stored = this.db.transaction(
        (): "STORED" | "GONE" | "ROLE_CHANGED" => {
          const current = this.userById(user.id);
          if (!current) return "GONE";
          if (current.role !== role) {
            role = current.role;
            return "ROLE_CHANGED";
          }
          const family = { id: familyId, userId: user.id, revokedAt: null };
          this.db
            .insert(refreshFamilies)
            .values({
              ...family,
              createdAt: now,
              expiresAt: tokens.lastExpiry,
              seal: this.options.seal.family(family),
            })
            .run();
          this.storeRefreshToken(user.id, familyId, tokens, now);
          sessionsEnded = this.endSessionsPastCap(user.id, familyId, now);
          return "STORED";
        },
        { behavior: "immediate" },
      );
      if (stored === "STORED") break;
      if (stored === "GONE") return { code: "INVALID" };
      tokens = await this.prepareTokens(user.id, role, familyId, now);
    }
    if (sessionsEnded > 0) this.options.credentials.applyRevocations();
    audit.record({
      type: "auth.login.succeeded",
      outcome: "success",
      actor: `user:${user.id}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
      ...(sessionsEnded > 0 ? { detail: { sessionsEnded } } : {}),
    });
    return { code: "OK", user: publicUser({ ...user, role }), tokens: publicTokens(tokens) };
  }

  async refresh(token: string, meta: RequestMeta): Promise<RefreshOutcome> {
    const { clock, audit } = this.options;
    const { refreshByHash } = this.statements;
    const db = this.db;
    const now = clock.now();
    const hash = sha256Hex(token);
    // A first look outside the transaction, so an unknown token costs no signature.
    const seen = this.sealedRefresh(refreshByHash.get({ hash }));
    if (seen && usedAfterItsSessionEnded(seen, now)) {
      // Someone rotated on past this token before the session ended (a thief's rotations can end
      // it at the token limit first, probe 87a F6): its holder presenting it now is still the
      // sign of theft, not an unknown token. Audited once a token (in this process): the session
      // is over, and each presentation of one token wrote a row (probe 87c F4); counted each time.
      if (this.reusedAfterEnd.get(seen.id) === undefined) {
        this.reusedAfterEnd.set(seen.id, true);
        this.auditReuse(seen, meta, { sessionEnded: true });
      }
      return { code: "REUSED" };
    }
    if (!seen || !usable(seen, now)) return { code: "INVALID" };
    const user = this.userById(seen.userId);
    if (!user) return { code: "INVALID" };
    const tokens = await this.prepareTokens(
      user.id,
      user.role,
      seen.familyId,
      now,
      this.options.successorOf(token),
    );

    // The decision, made again inside one write transaction: everything above may be stale.
    let successor: StoredSuccessor | undefined;
    const decision = db.transaction(
      (): "OK" | "REPEATED" | "INVALID" | "REUSED" | "FULL" => {
        const row = this.sealedRefresh(refreshByHash.get({ hash }));
        if (!row || !usable(row, now)) return "INVALID";
        // The role is in the access token: a change since it was signed refuses it (and the
        // change revoked the family anyway).
        const sameRole = () => this.userById(row.userId)?.role === user.role;
        if (row.usedAt !== null) {
          successor = this.storedSuccessor(tokens);
          if (this.isRepeat(row, successor?.row, now)) return sameRole() ? "REPEATED" : "INVALID";
          // A second use of one token is theft or a replay: the whole family ends, now.
          this.revokeFamilyRows(row.familyId, now);
          return "REUSED";
        }
        if (!sameRole()) return "INVALID";
        // Its successor is stored already: this token was used, and its use was wiped from the
        // file (`used_at` is no secret's to keep). Reuse, not a first use.
        if (this.storedSuccessor(tokens)) {
          this.revokeFamilyRows(row.familyId, now);
          return "REUSED";
        }
        // A session that used TOKENS_PER_FAMILY tokens ends here: sign in again (familyFull).
        if (this.familyFull(row.familyId)) {
          this.revokeFamilyRows(row.familyId, now);
          return "FULL";
        }
        db.update(refreshTokens).set({ usedAt: now }).where(eq(refreshTokens.id, row.id)).run();
        db.update(refreshFamilies)
          .set({ expiresAt: sql`max(${refreshFamilies.expiresAt}, ${tokens.lastExpiry})` })
          .where(eq(refreshFamilies.id, row.familyId))
          .run();
        this.storeRefreshToken(row.userId, row.familyId, tokens, now);
        return "OK";
      },
      { behavior: "immediate" },
    );

    if (decision === "INVALID") return { code: "INVALID" };
    if (decision === "FULL") {
      this.options.credentials.applyRevocations();
      audit.record({
        // The session ended, as a logout ends one, by the service: its reason says why.
        type: "auth.logout",
        outcome: "info",
        actor: `user:${seen.userId}`,
        ip: meta.client.ip,
        route: meta.route,
        requestId: meta.requestId,
        detail: { family: seen.familyId, reason: "token_limit" },
      });
      return { code: "INVALID" };
    }
    if (decision === "REUSED") {
      this.options.credentials.applyRevocations();
      this.auditReuse(seen, meta);
      return { code: "REUSED" };
    }
    audit.record({
      type: "auth.refresh.succeeded",
      outcome: "success",
      actor: `user:${user.id}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
      ...(decision === "REPEATED" ? { detail: { family: seen.familyId, repeat: true } } : {}),
    });
    // A repeat is answered with the successor as it was stored: unprefixed when the release
    // before the prefix rotated the token.
    const answered =
      decision === "REPEATED" && successor ? { ...tokens, refreshToken: successor.token } : tokens;
    return { code: "OK", tokens: publicTokens(answered) };
  }

  /** A refresh token presented again after its use: `auth.refresh.reused`, naming its session. */
  private auditReuse(
    seen: RefreshRow,
    meta: RequestMeta,
    detail: { sessionEnded: true } | Record<string, never> = {},
  ): void {
    this.options.audit.record({
      type: "auth.refresh.reused",
      outcome: "denied",
      actor: `user:${seen.userId}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
      detail: { family: seen.familyId, ...detail },
    });
  }

  /**
   * Whether a used token is presented again as a repeat, not reuse: its first use was at most
   * REPEAT_GRACE_MS from now (before, or after when the two raced and this refresh read the clock
   * first), and the successor that use stored is still unused in the same family, so no later
   * rotation has happened that a holder of this token could not know of. `used_at` is not sealed:
   * a time written into the file far ahead, a text or a number no clock reads never stretches the
   * grace (probe 29a F1); such a token is reuse.
   */
  private isRepeat(row: RefreshRow, stored: RefreshRow | undefined, now: number): boolean {
    const usedAt: unknown = row.usedAt;
    if (
      typeof usedAt !== "number" ||
      !Number.isSafeInteger(usedAt) ||
      Math.abs(now - usedAt) > REPEAT_GRACE_MS
    ) {
      return false;
    }
    const successor = this.sealedRefresh(stored);
    return (
      successor !== null &&
      successor.familyId === row.familyId &&
      successor.usedAt === null &&
      usable(successor, now)
    );
  }

  /**
   * The row of the successor a use of the token being refreshed stored, in its spelling or in the
   * unprefixed one of the release before refresh tokens had a prefix (refresh-successor).
   */
  private storedSuccessor(tokens: PreparedTokens): StoredSuccessor | undefined {
    const { refreshByHash } = this.statements;
    const row = refreshByHash.get({ hash: tokens.refreshHash });
    if (row) return { row, token: tokens.refreshToken };
    const unprefixed = unprefixedSuccessor(tokens.refreshToken);
    const legacy = refreshByHash.get({ hash: sha256Hex(unprefixed) });
    return legacy ? { row: legacy, token: unprefixed } : undefined;
  }

  logout(userId: string, familyId: string, meta: RequestMeta): void {
    // Logouts of one session at once all pass the auth stage before the first ends it: the one
    // that ended it is audited, not each (probe 38c: twenty rows for one logout).
    if (!this.revokeFamily(familyId)) return;
    this.options.audit.record({
      type: "auth.logout",
      outcome: "success",
      actor: `user:${userId}`,
      ip: meta.client.ip,
      route: meta.route,
      requestId: meta.requestId,
    });
  }

  /**
   * Ends a refresh family and, within a second everywhere, its access tokens. Whether it ended it
   * (false: ended already, or no such family).
   */
  revokeFamily(familyId: string): boolean {
    const now = this.options.clock.now();
    const ended = this.db.transaction(() => this.revokeFamilyRows(familyId, now), {
      behavior: "immediate",
    });
    this.options.credentials.applyRevocations();
    return ended;
  }

  /**
   * Deletes refresh tokens that can no longer be used (expired, or revoked longer ago than any
   * access token lives) and revocation rows no process needs any more. Bounded per call.
   */
  pruneSessions(now: number): number {
    const { config } = this.options;
    const db = this.db;
    const accessTtlMs = config.jwt.accessTokenExpireMinutes * 60_000;
    // Two statements, each on an index: one that read the table for either (an OR) scanned all of
    // it, ~0.15 s of write lock every run among 720,000 rows (probe 87c). A token revoked is always
    // one of a session ended then (revokeFamilyRows), so the second finds it; one whose row says
    // revoked in a live session goes at its expiry.
    const expired = this.deleteTokensAmong(
      db
        .select({ id: refreshTokens.id })
        .from(refreshTokens)
        .where(lt(refreshTokens.expiresAt, now))
        .limit(PRUNE_BATCH),
    );
    const ended =
      expired < PRUNE_BATCH
        ? this.deleteTokensAmong(
            // CROSS JOIN keeps this order: the sessions ended, then each one's tokens by its index.
            db
              .select({ id: refreshTokens.id })
              .from(refreshFamilies)
              .crossJoin(refreshTokens)
              .where(
                and(
                  lt(refreshFamilies.revokedAt, now - accessTtlMs),
                  eq(refreshTokens.familyId, refreshFamilies.id),
                ),
              )
              .limit(PRUNE_BATCH - expired),
          )
        : 0;
    // An expiry no token of Palisade's has (written into the file: past any lifetime it allows, or
    // not a number, which SQLite orders after every number): refused, and never expired, so kept
    // for good with its session (probes 88e F3, 88f F3). Found on the expiry's own index.
    const unwritten =
      expired + ended < PRUNE_BATCH
        ? this.deleteTokensAmong(
            db
              .select({ id: refreshTokens.id })
              .from(refreshTokens)
              .where(gt(refreshTokens.expiresAt, now + EXPIRY_HORIZON_MS))
              .limit(PRUNE_BATCH - expired - ended),
          )
        : 0;
    const tokens = expired + ended + unwritten;
    // A family row goes only once no token of it can be valid, revoked or not: a token whose
    // family has no row is refused, so this never revives anything. An ended one goes with its
    // tokens (an access token's life after its end): kept for its 30 days, the sessions the cap
    // ended filled an account's export all the same (probe 83g F1: 15,000 rows, 0.4 s before its
    // first byte).
    const families = this.deleteFamiliesWithoutTokens(
      or(
        lt(refreshFamilies.expiresAt, now - FAMILY_GRACE_MS),
        lt(refreshFamilies.revokedAt, now - accessTtlMs - FAMILY_GRACE_MS),
      ),
    );
    // As a token's: an end no session of Palisade's has, once none of its tokens is left (probe
    // 88f F4: one written as text was never pruned, and counted as live against the cap of 100).
    // A statement of its own: a third term in the OR above read every session.
    const unendingFamilies = this.deleteFamiliesWithoutTokens(
      gt(refreshFamilies.expiresAt, now + EXPIRY_HORIZON_MS),
    );
    const revocations = this.deleteRevocationsWhere(
      lt(authRevocations.createdAt, now - accessTtlMs - 60 * 60_000),
    );
    // A record stamped far ahead, or not with a time (written into the file): never old enough for
    // the statement above, and read again at every start (probe 88g F5). The revocation itself is
    // on its family's sealed row, and every process has read the record within a second of it.
    const unstamped = this.deleteRevocationsWhere(
      gt(authRevocations.createdAt, now + REVOCATION_AHEAD_LIMIT_MS),
    );
    return tokens + families + unendingFamilies + revocations + unstamped;
  }

  /**
   * Deletes at most PRUNE_BATCH of the families `condition` selects that hold no token; how many.
   * Their tokens first: a used token left without its family would be found by nothing but its
   * expiry, 30 days on.
   */
  private deleteFamiliesWithoutTokens(condition: SQL | undefined): number {
    const db = this.db;
    return db
      .delete(refreshFamilies)
      .where(
        inArray(
          refreshFamilies.id,
          db
            .select({ id: refreshFamilies.id })
            .from(refreshFamilies)
            .where(
              and(
                condition,
                notExists(
                  db
                    .select({ one: sql`1` })
                    .from(refreshTokens)
                    .where(eq(refreshTokens.familyId, refreshFamilies.id)),
                ),
              ),
            )
            .limit(PRUNE_BATCH),
        ),
      )
      .returning({ id: refreshFamilies.id })
      .all().length;
  }

  /** Deletes at most PRUNE_BATCH of the revocation records `condition` selects; how many. */
  private deleteRevocationsWhere(condition: SQL): number {
    const db = this.db;
    return db
      .delete(authRevocations)
      .where(
        inArray(
          authRevocations.id,
          db
            .select({ id: authRevocations.id })
            .from(authRevocations)
            .where(condition)
            .limit(PRUNE_BATCH),
        ),
      )
      .returning({ id: authRevocations.id })
      .all().length;
  }

  /** Deletes the refresh tokens whose ids `chosen` selects; how many. */
  private deleteTokensAmong(chosen: SQLWrapper): number {
    return this.db
      .delete(refreshTokens)
      .where(inArray(refreshTokens.id, chosen))
      .returning({ id: refreshTokens.id })
      .all().length;
  }

  /**
   * Deletes at most `part` of the user's used refresh tokens, in a transaction of its own; whether
   * none is left. What an erasure does ahead of its transaction (privacy.ts): a used token only
   * tells its reuse, and its session stands without it.
   */
  deleteUsedTokens(userId: string, part: number): boolean {
    const deleted = this.db.transaction(
      () =>
        this.db.$client
          .prepare<unknown, [string, number]>(
            `DELETE FROM refresh_tokens WHERE rowid IN (
               SELECT rowid FROM refresh_tokens WHERE user_id = ? AND used_at IS NOT NULL LIMIT ?)`,
          )
          .run(userId, part).changes,
      { behavior: "immediate" },
    );
    return deleted < part;
  }

  /**
   * Ends every session of a user (role change, erasure), and drops every process's cached copies of
   * the user's keys, so their next use is checked against the account as it now is.
   */
  revokeUserSessions(userId: string): void {
    const { clock, credentials } = this.options;
    const db = this.db;
    const now = clock.now();
    db.transaction(
      () => {
        const families = db
          .select({ id: refreshFamilies.id })
          .from(refreshFamilies)
          .where(and(eq(refreshFamilies.userId, userId), isNull(refreshFamilies.revokedAt)))
          .all();
        for (const { id } of families) this.revokeFamilyRows(id, now);
        // With the families it stands for (probe 58a F2's class), read after the commit.
        credentials.recordRevocation("user", userId);
      },
      { behavior: "immediate" },
    );
    credentials.applyRevocations();
  }

  /**
   * Ends every session of every account (an incident, a restored backup): each refresh family
   * still live is revoked, and every process drops those accounts' cached access tokens within a
   * second (an access token not cached is checked against its family, now revoked). API keys are
   * not sessions and stay. SESSIONS_ENDED_PER_TRANSACTION families a transaction, with `pause`
   * between two, so that the service's own writes wait for one short batch at a time, not for the
   * whole file (each family is revoked with its feed row, so a batch stands on its own); in id
   * order, so each family is looked at once. Audited as `admin.sessions.ended` with the counts.
   */
  endAllSessions(
    actor: string,
    pause: () => void = () => {},
  ): { sessions: number; accounts: number } {
    const { clock, credentials, audit } = this.options;
    const accounts = new Set<string>();
    let sessions = 0;
    let after = "";
    for (;;) {
      const batch = this.db.transaction(
        () => {
          const now = clock.now();
          const families = this.db
            .select({ id: refreshFamilies.id, userId: refreshFamilies.userId })
            .from(refreshFamilies)
            .where(and(isNull(refreshFamilies.revokedAt), gt(refreshFamilies.id, after)))
            .orderBy(asc(refreshFamilies.id))
            .limit(SESSIONS_ENDED_PER_TRANSACTION)
            .all();
          for (const family of families) this.revokeFamilyRows(family.id, now);
          // With the first revocations, not after the last: a run cut short (killed, the disk
          // full) has still said who began ending every session, and the missing `ended` says it
          // did not finish.
          if (after === "" && families.length > 0) {
            audit.record({ type: "admin.sessions.ending", outcome: "success", actor, at: now });
          }
          return families;
        },
        { behavior: "immediate" },
      );
      credentials.applyRevocations();
      if (batch.length === 0) break;
      sessions += batch.length;
      for (const family of batch) accounts.add(family.userId);
      after = batch.at(-1)!.id;
      pause();
    }
    const counts = { sessions, accounts: accounts.size };
    audit.record({ type: "admin.sessions.ended", outcome: "success", actor, detail: counts });
    return counts;
  }

  /**
   * Every account as an operator lists it (after a restore, to compare two files): id, address,
   * role, when it was made, and whether its row matches its seal (one that does not is refused at
   * sign-in, and its role proves nothing). Ordered by when it was made.
   */
  accountsForOperator(): {
    id: string;
    email: string;
    role: Role;
    createdAt: Date;
    intact: boolean;
    /**
     * No key, or a key folded once beside the account holding its address (both left so at
     * start): it cannot sign in by address, and is named by its id.
     */
    setAside: boolean;
  }[] {
    const { seal } = this.options;
    return this.db
      .select()
      .from(users)
      .orderBy(asc(users.createdAt), asc(users.id))
      .all()
      .map((row) => ({
        id: row.id,
        email: row.email,
        role: row.role,
        createdAt: row.createdAt,
        intact: seal.intact.account(row),
        // No key, or one a start left folded once beside the account holding its address.
        setAside:
          row.emailKey === null ||
          (typeof row.emailKey === "string" && foldCase(row.emailKey) !== row.emailKey),
      }));
  }

  /**
   * An account as an operator names it, by any spelling of its address, whether or not its row
   * matches its seal (`intact`): an operator must still be able to demote an account whose row was
   * written into the file, and to be told so.
   */
  accountForOperator(email: string): OperatorAccount | null {
    const row = this.statements.userByEmail.get({ value: emailLookupKey(email) });
    return row ? this.asOperatorSees(row) : null;
  }

  /** An account by its id, for one that has no key (set aside at start) or to be exact. */
  accountForOperatorById(id: string): OperatorAccount | null {
    const row = this.statements.userById.get({ value: id });
    return row ? this.asOperatorSees(row) : null;
  }

  /**
   * The accounts left at start beside the one holding the key `email` has (no key, or one folded
   * once): the address finds that account, never them (probe 92a F1: an operator naming one by
   * its own stored spelling promoted or erased the other). Few: rows only a collision leaves.
   */
  setAsideAlike(email: string): { id: string; email: unknown }[] {
    const key = emailLookupKey(email);
    // The rows the start and registration count as claiming the address (checked as registration
    // checks an address), not another reading of it.
    const setAside = unkeyedRowsClaiming(this.db, key);
    // And those a start left on a key folded once, whose address another account holds (probe
    // 92g F1): the same address, which either may be meant by. Only accounts that match their
    // seals: a row written into the file is no account an operator may mean, and blocked the
    // address for good (92g F2).
    const { seal } = this.options;
    const intact: { id: string; email: unknown }[] = [];
    for (const candidate of [...setAside, ...unfoldedKeysFoldingTo(this.db, key)]) {
      if (typeof candidate.id !== "string") continue;
      const row = this.statements.userById.get({ value: candidate.id });
      if (row !== undefined && sealMatches(seal.account(row), row.seal)) {
        intact.push({ id: candidate.id, email: candidate.email });
      }
    }
    return intact;
  }

  private asOperatorSees(row: UserRow): OperatorAccount {
    const { seal } = this.options;
    const intact = seal.intact.account(row);
    return {
      id: row.id,
      // As stored, which the operator's spelling only found (case, width, a trailing dot…); as the
      // file holds it, which may be no text (a row written into it).
      email: row.email as unknown,
      role: row.role,
      intact,
      erased: !intact && seal.erased(`user:${row.id}`),
    };
  }

  /**
   * Changes an account's role; true when it changed. A row that does not match its seal is never
   * resealed: it may be demoted (the role column changes, its keys are narrowed and its sessions end,
   * and it stays refused), never promoted.
   */
  setRole(userId: string, role: Role, actor: string | null): boolean {
    return this.db.transaction(
      () => {
        const current = this.statements.userById.get({ value: userId });
        if (!current) return false;
        const { seal } = this.options;
        const intact = seal.intact.account(current);
        // A tampered row's role column proves nothing: a demotion always ends its sessions.
        if (intact && current.role === role) return false;
        if (!intact && role === "admin") return false;
        // An erased account's row copied back is erased again, not changed: a change would name
        // the erased account in the audit log its erasure pseudonymised.
        if (!intact && seal.erased(`user:${userId}`)) return false;
        const change = { role, updatedAt: new Date(this.options.clock.now()) };
        this.db
          .update(users)
          .set(intact ? { ...change, seal: seal.account({ ...current, role }) } : change)
          .where(eq(users.id, userId))
          .run();
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
      },
      { behavior: "immediate" },
    );
  }

  /**
   * Ends the user's oldest live sessions past SESSIONS_PER_ACCOUNT (a new sign-in's family just
   * made among them); how many. Call inside the sign-in's transaction. Without a cap, an account
   * signing in at its limit kept ~216,000 sessions live (5 a minute for 30 days), which its export
   * read and checked before its first byte (1–3 s of the event loop) and its erasure revoked in one
   * transaction (~23 s of the write lock; probe 83b F4).
   */
  private endSessionsPastCap(userId: string, madeNow: string, now: number): number {
    // Never the one this sign-in made: after the clock stepped back it is dated before the others,
    // and ended itself (probe 83g F5).
    const past = this.db
      .select({ id: refreshFamilies.id })
      .from(refreshFamilies)
      .where(
        and(
          eq(refreshFamilies.userId, userId),
          isNull(refreshFamilies.revokedAt),
          gt(refreshFamilies.expiresAt, now),
          ne(refreshFamilies.id, madeNow),
        ),
      )
      // In the order they were written (SQLite's rowid), not by their time: after the clock stepped
      // back every new session is dated before the others, and each sign-in ended the one made a
      // moment before it (probe 83h F3).
      .orderBy(desc(sql`rowid`))
      // A sign-in adds one; more past the cap are those written into the file, ended a part at a
      // time by the sign-ins after.
      .limit(SESSIONS_ENDED_PER_TRANSACTION)
      .offset(SESSIONS_PER_ACCOUNT - 1)
      .all();
    for (const { id } of past) this.revokeFamilyRows(id, now);
    return past.length;
  }

  /** Marks a family revoked, its tokens too, and tells every process. Call inside a transaction. */
  private revokeFamilyRows(familyId: string, now: number): boolean {
    const family = this.db
      .select(sealedFamilyColumns)
      .from(refreshFamilies)
      .where(eq(refreshFamilies.id, familyId))
      .get();
    const ending = family !== undefined && family.revokedAt === null;
    if (ending) {
      const { seal } = this.options;
      // Resealed with the revocation, so clearing it in the file breaks the seal; a row that did
      // not match before stays unmatched (and refused).
      const intact = seal.intact.family(family);
      this.db
        .update(refreshFamilies)
        .set(
          intact
            ? { revokedAt: now, seal: seal.family({ ...family, revokedAt: now }) }
            : { revokedAt: now },
        )
        .where(eq(refreshFamilies.id, familyId))
        .run();
    }
    // Only the tokens not used yet: a used one is refused as it is (its family is revoked, under
    // the family's seal), and a session of 10,000 used tokens took 0.7 s of write lock to mark
    // them all, a hundred such an account's role change 8 s (probe 87a F1). The prune deletes them
    // once the family has been revoked an access token's life.
    this.db
      .update(refreshTokens)
      .set({ revokedAt: now })
      .where(
        and(
          eq(refreshTokens.familyId, familyId),
          isNull(refreshTokens.revokedAt),
          isNull(refreshTokens.usedAt),
        ),
      )
      .run();
    this.options.credentials.recordRevocation("family", familyId);
    return ending;
  }

  /**
   * Signs an access token and draws a refresh token (a login's), or takes the successor a rotation
   * derived; nothing is stored yet.
   */
  private async prepareTokens(
    userId: string,
    role: Role,
    familyId: string,
    now: number,
    refreshToken = generateRefreshToken(),
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
    return {
      accessToken,
      refreshToken,
      expiresIn: accessTtl,
      refreshExpiresIn: refreshTtl,
      refreshHash: sha256Hex(refreshToken),
      lastExpiry: now + Math.max(accessTtl, refreshTtl) * 1000,
    };
  }

  /**
   * Whether a session holds TOKENS_PER_FAMILY refresh-token rows. Every refresh keeps the token it
   * used, to tell its reuse, for the token's 30 days: one account refreshing from many /64s grew a
   * session without bound, and its logout or erasure rewrote every row in one transaction (probe
   * 86c F2: 400,000 rows, 1.3 and 12.9 s of the write lock). A full session ends instead: deleting
   * its oldest used tokens deleted the evidence a thief's reuse is caught by (probe 86e F3: a thief
   * rotating 1,010 times left the victim's token unknown, and kept the session).
   */
  private familyFull(familyId: string): boolean {
    return this.statements.familyRowPastLimit.get({ familyId }) !== undefined;
  }

  private storeRefreshToken(
    userId: string,
    familyId: string,
    tokens: PreparedTokens,
    now: number,
  ): void {
    const row = {
      id: Bun.randomUUIDv7(),
      userId,
      familyId,
      tokenHash: tokens.refreshHash,
      expiresAt: now + tokens.refreshExpiresIn * 1000,
    };
    this.db
      .insert(refreshTokens)
      .values({ ...row, createdAt: now, seal: this.options.seal.refreshToken(row) })
      .run();
  }
}

/** Clock skew allowed on access tokens, and then some: how long a family outlives its tokens. */
const FAMILY_GRACE_MS = 60_000;
/**
 * How long after a refresh token's use the same token is a repeat, answered with the successor it
 * got, rather than reuse, which ends the session: long enough for a client's retry after a lost
 * answer or a slow network and for tabs racing, short enough that a stolen token replayed later
 * still ends the session (and one replayed within it only shares the successor, whose next
 * rotation leaves the other holder two behind: reuse).
 */
export const REPEAT_GRACE_MS = 10_000;
/**
 * The refresh-token rows after which a session ends (familyFull): a client refreshing at every
 * access token's end uses 720 in a refresh token's 30 days at the default 60 minutes, 8,640 at 5;
 * at ACCESS_TOKEN_EXPIRE_MINUTES=1 it signs in again about once a week.
 */
export const TOKENS_PER_FAMILY = 10_000;
/**
 * How far ahead of now an expiry Palisade writes can lie: the longest refresh lifetime
 * (REFRESH_TOKEN_EXPIRE_DAYS at most 365) and thirty days of a clock set back since it was written
 * (probe 88g F1: with two days, a clock stepped back three ended real sessions at 365). A token or
 * session whose expiry lies past it, or is no number at all, was written into the file; the prune
 * deletes it.
 */
const EXPIRY_HORIZON_MS = (365 + 30) * 24 * 60 * 60_000;
/** How far ahead a revocation record a process wrote can be stamped: its clock's skew, a month. */
const REVOCATION_AHEAD_LIMIT_MS = 30 * 24 * 60 * 60_000;
/** Rows each table gives up per prune call at most, so a prune never stalls the event loop. */
const PRUNE_BATCH = 1000;
/**
 * Refresh families revoked per transaction by `endAllSessions`: under 10 ms of write lock here,
 * well under the 50 ms a request waits for the lock before it answers 503 (250 a batch measured
 * one 503 in ~250 refreshes while 50,000 sessions were ended).
 */
const SESSIONS_ENDED_PER_TRANSACTION = 100;
/**
 * Live sessions (refresh families) one account keeps: a sign-in past it ends the oldest. Ample for a
 * person's devices and browsers; bounds what its export reads and its erasure revokes.
 */
export const SESSIONS_PER_ACCOUNT = 100;

/** Whether a refresh token may be presented at all: known, its family live, not expired. */
/**
 * A used token (used longer ago than a repeat's grace) of a session already ended, presented
 * before its own expiry: reuse, as it would have been while the session stood.
 */
function usedAfterItsSessionEnded(row: RefreshRow, now: number): boolean {
  const usedAt: unknown = row.usedAt;
  return (
    typeof usedAt === "number" &&
    Number.isSafeInteger(usedAt) &&
    now - usedAt > REPEAT_GRACE_MS &&
    row.family !== null &&
    row.familyRevokedAt !== null &&
    row.expiresAt > now
  );
}

function usable(row: RefreshRow, now: number): boolean {
  return (
    row.family !== null &&
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
  return { id: row.id, email: row.email, role: row.role, createdAt: row.createdAt.getTime() };
}
